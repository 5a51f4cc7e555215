//! Ethereum deposits against a real Anvil node and the real engine: ETH from blocks, the test
//! token from `Transfer` logs, credited once per (tx, log index) at the confirmations, dropped
//! and reversed by real reorgs (`anvil_reorg`), and the rate at which one block's many
//! deposits are credited.

use kinko_chain::eth::anvil::Anvil;
use kinko_chain::eth::{erc20_transfer, EthAddress};
use kinko_core::identity::{IdentityCommand, IdentityReply};
use kinko_core::wallet::DepositStatus;
use kinko_core::{AssetCode, AssetId, Command, Reply, UserId};
use kinko_custody::eth::{EthAsset, EthDeposits, NATIVE_VOUT};
use kinko_engine::launch::Node;
use kinko_engine::link::EngineLink;
use kinko_engine::EngineConfig;
use kinko_signer::eth::EthKeys;
use kinko_signer::keystore::{KdfParams, Keystore, Role};
use std::time::Instant;

const ETH: u128 = 1_000_000_000_000_000_000;
const CONFIRMATIONS: u64 = 3;
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const PASSPHRASE: &str = "test passphrase, not a real one";
/// The signer's keystore, in the rig's directory.
const KEYSTORE: &str = "hot.keystore";

struct EthRig {
    anvil: Anvil,
    dir: tempfile::TempDir,
    _engine: Node,
    link: EngineLink,
    eth: AssetId,
    usdc: AssetId,
    token: EthAddress,
    keys: EthKeys,
}

fn define(link: &EngineLink, code: &str, decimals: u8) -> AssetId {
    match link
        .submit(Command::DefineAsset {
            code: AssetCode::new(code).unwrap(),
            decimals,
        })
        .unwrap()
        .unwrap()
    {
        Reply::AssetDefined { asset, .. } => asset,
        other => panic!("{other:?}"),
    }
}

impl EthRig {
    fn start() -> EthRig {
        let anvil = Anvil::start().expect("anvil (run scripts/install-test-deps)");
        let dir = tempfile::tempdir().unwrap();
        let engine = kinko_engine::launch::open(&EngineConfig::new(dir.path().join("data"))).unwrap();
        let link = EngineLink::new(engine.sequencer.handle(), engine.read.clone());
        let eth = define(&link, "ETH", 18);
        let usdc = define(&link, "USDC", 6);
        let token = anvil.deploy_test_token().unwrap();
        // The signer's keys, from its encrypted keystore; kinko gets the account xpub only.
        let keystore = dir.path().join(KEYSTORE);
        Keystore::create_with(
            &keystore,
            kinko_chain::Network::LitecoinRegtest,
            Role::Hot,
            PASSPHRASE,
            KdfParams::TEST_FAST,
        )
        .unwrap();
        let master = Keystore::open_with(&keystore, PASSPHRASE, true).unwrap().master();
        let keys = EthKeys::new(&master).unwrap();
        EthRig {
            anvil,
            dir,
            _engine: engine,
            link,
            eth,
            usdc,
            token,
            keys,
        }
    }

    fn watcher(&self, asset: AssetId, kind: EthAsset) -> EthDeposits {
        let from = self.anvil.rpc().block_number().unwrap() + 1;
        EthDeposits::new(
            self.anvil.rpc(),
            self.link.clone(),
            asset,
            kind,
            self.keys.xpub(),
            CONFIRMATIONS,
            6,
            from,
        )
    }

    fn user(&self, n: u32) -> UserId {
        let r = self
            .link
            .submit(Command::Identity(IdentityCommand::Register {
                email: format!("eth{n}@example.com"),
                password_hash: PASSWORD_HASH.into(),
            }))
            .unwrap()
            .unwrap();
        let Reply::Identity(IdentityReply::Registered(user)) = r else {
            panic!("{r:?}")
        };
        user
    }

    fn customer(&self, user: UserId, asset: AssetId) -> (i128, u128) {
        self.link.view(|e| {
            let id = e.ledger().customer_account(user, asset).unwrap();
            let a = e.ledger().account(id).unwrap();
            (a.balance(), a.available())
        })
    }

    fn statuses(&self, asset: AssetId) -> Vec<(String, u32, DepositStatus)> {
        self.link.view(|e| {
            e.wallet()
                .deposits()
                .iter()
                .filter(|d| d.asset == asset)
                .map(|d| (d.txid.clone(), d.vout, d.status))
                .collect()
        })
    }

    fn pay_eth(&self, to: &EthAddress, wei: u128) -> [u8; 32] {
        let faucet = self.anvil.faucet().unwrap();
        self.anvil
            .rpc()
            .send_from_dev(&faucet, Some(to), wei, &[])
            .unwrap()
    }

    fn pay_token(&self, to: &EthAddress, units: u128) -> [u8; 32] {
        let faucet = self.anvil.faucet().unwrap();
        self.anvil
            .rpc()
            .send_from_dev(&faucet, Some(&self.token), 0, &erc20_transfer(to, units))
            .unwrap()
    }

    /// The signer's master key (the keystore opened as the signer does).
    fn master(&self) -> bitcoin::bip32::Xpriv {
        Keystore::open_with(&self.dir.path().join(KEYSTORE), PASSPHRASE, true)
            .unwrap()
            .master()
    }

    fn audit(&self) {
        self.link.view(|e| e.check().expect("engine invariants hold"));
    }
}

#[test]
fn eth_deposits_are_credited_at_depth_dropped_and_reversed_by_real_reorgs() {
    let rig = EthRig::start();
    let rpc = rig.anvil.rpc();
    let mut w = rig.watcher(rig.eth, EthAsset::Ether);
    let alice = rig.user(1);
    let a = w.assign_address(alice).unwrap();
    // The address is the signer's deposit key, derived by kinko from the xpub alone.
    let index = |u: UserId| u32::try_from(u.0).unwrap();
    assert_eq!(
        a,
        rig.keys
            .address(kinko_chain::eth::Branch::Deposit, index(alice))
            .unwrap()
    );
    let carol = rig.user(2);
    let c = w.assign_address(carol).unwrap();
    assert_eq!(
        c,
        rig.keys
            .address(kinko_chain::eth::Branch::Deposit, index(carol))
            .unwrap()
    );
    assert_ne!(a, c, "a distinct address per user");

    // 1. Seen at one confirmation (held), credited at three, once.
    let t1 = rig.pay_eth(&a, 2 * ETH);
    rig.anvil.mine_until_mined(&t1, 1).unwrap();
    let s = w.poll().unwrap();
    assert_eq!((s.seen, s.credited), (1, 0));
    assert_eq!(rig.customer(alice, rig.eth), (2 * ETH as i128, 0));
    rpc.mine(1).unwrap();
    assert_eq!(w.poll().unwrap().credited, 0);
    rpc.mine(1).unwrap();
    let s = w.poll().unwrap();
    assert_eq!((s.seen, s.credited), (0, 1));
    assert_eq!(rig.customer(alice, rig.eth), (2 * ETH as i128, 2 * ETH));
    let txid = format!("0x{}", hex::encode(t1));
    assert_eq!(
        rig.statuses(rig.eth),
        vec![(txid.clone(), NATIVE_VOUT, DepositStatus::Credited)]
    );
    // A new watcher (a restart) scanning the same blocks credits nothing twice.
    let mut again = EthDeposits::new(
        rpc.clone(),
        rig.link.clone(),
        rig.eth,
        EthAsset::Ether,
        rig.keys.xpub(),
        CONFIRMATIONS,
        6,
        0,
    );
    let s = again.poll().unwrap();
    assert_eq!((s.seen, s.credited), (0, 0));
    assert_eq!(rig.customer(alice, rig.eth), (2 * ETH as i128, 2 * ETH));

    // 2. A pending deposit whose block is reorganised away is dropped.
    let t2 = rig.pay_eth(&a, ETH);
    rig.anvil.mine_until_mined(&t2, 1).unwrap();
    assert_eq!(w.poll().unwrap().seen, 1);
    assert_eq!(rig.customer(alice, rig.eth).0, 3 * ETH as i128);
    rpc.reorg(1).unwrap();
    let s = w.poll().unwrap();
    assert_eq!(s.dropped, 1, "{s:?}");
    assert_eq!(rig.customer(alice, rig.eth), (2 * ETH as i128, 2 * ETH));

    // 3. A credited deposit taken away by a reorg deeper than the confirmations is reversed.
    let t3 = rig.pay_eth(&a, ETH);
    rig.anvil.mine_until_mined(&t3, 1).unwrap();
    rpc.mine(2).unwrap();
    let s = w.poll().unwrap();
    assert_eq!((s.seen, s.credited), (1, 1));
    assert_eq!(rig.customer(alice, rig.eth), (3 * ETH as i128, 3 * ETH));
    rpc.reorg(4).unwrap();
    let s = w.poll().unwrap();
    assert_eq!(s.reversed, 1, "{s:?}");
    assert_eq!(rig.customer(alice, rig.eth), (2 * ETH as i128, 2 * ETH));
    let st = rig.statuses(rig.eth);
    assert_eq!(st.iter().filter(|x| x.2 == DepositStatus::Dropped).count(), 1);
    assert_eq!(st.iter().filter(|x| x.2 == DepositStatus::Reversed).count(), 1);
    // The first deposit (below the reorgs) stays credited.
    assert!(st.contains(&(txid, NATIVE_VOUT, DepositStatus::Credited)));
    rig.audit();
}

#[test]
fn token_deposits_are_credited_once_per_log_and_never_mixed_with_eth() {
    let rig = EthRig::start();
    let rpc = rig.anvil.rpc();
    let mut tokens = rig.watcher(rig.usdc, EthAsset::Token(rig.token));
    let mut ether = rig.watcher(rig.eth, EthAsset::Ether);
    let bob = rig.user(3);
    let b = tokens.assign_address(bob).unwrap();
    let be = ether.assign_address(bob).unwrap();
    assert_eq!(b, be, "one deposit account per user, for ETH and the token");
    let t1 = rig.pay_token(&b, 1_500_000);
    let t2 = rig.pay_token(&b, 2_000_000);
    // ETH paid to the same address is an ETH deposit, never a USDC one.
    let t3 = rig.pay_eth(&b, ETH);
    rig.anvil.mine_until_mined(&t1, 1).unwrap();
    for t in [t2, t3] {
        assert!(rpc.receipt(&t).unwrap().is_some(), "one block holds all three");
    }
    let s = tokens.poll().unwrap();
    assert_eq!(s.seen, 2);
    assert_eq!(ether.poll().unwrap().seen, 1);
    rpc.mine(2).unwrap();
    let s = tokens.poll().unwrap();
    assert_eq!(s.credited, 2);
    assert_eq!(ether.poll().unwrap().credited, 1);
    assert_eq!(rig.customer(bob, rig.usdc), (3_500_000, 3_500_000));
    assert_eq!(rig.customer(bob, rig.eth), (ETH as i128, ETH));
    let st = rig.statuses(rig.usdc);
    assert_eq!(st.len(), 2);
    assert!(st
        .iter()
        .all(|(_, vout, s)| *vout != NATIVE_VOUT && *s == DepositStatus::Credited));
    // Polling again credits nothing twice.
    rpc.mine(1).unwrap();
    let s = tokens.poll().unwrap();
    assert_eq!((s.seen, s.credited), (0, 0));
    assert_eq!(rig.customer(bob, rig.usdc), (3_500_000, 3_500_000));
    rig.audit();
}

#[test]
fn many_deposits_in_one_block_are_credited_and_timed() {
    const N: u32 = 150;
    let rig = EthRig::start();
    let rpc = rig.anvil.rpc();
    let mut w = rig.watcher(rig.eth, EthAsset::Ether);
    let mut users = Vec::new();
    for i in 0..N {
        let u = rig.user(100 + i);
        let a = w.assign_address(u).unwrap();
        users.push((u, a));
    }
    let mut last = [0u8; 32];
    for (i, (_, a)) in users.iter().enumerate() {
        last = rig.pay_eth(a, ETH + i as u128);
    }
    rig.anvil.mine_until_mined(&last, 1).unwrap();
    let block = rpc.block_number().unwrap();
    assert_eq!(
        rpc.block_at(block).unwrap().unwrap().transactions.len(),
        N as usize
    );
    rpc.mine(CONFIRMATIONS - 1).unwrap();
    let start = Instant::now();
    let s = w.poll().unwrap();
    let elapsed = start.elapsed();
    assert_eq!((s.seen, s.credited), (N as usize, N as usize));
    for (i, (u, _)) in users.iter().enumerate() {
        let amount = ETH + i as u128;
        assert_eq!(rig.customer(*u, rig.eth), (amount as i128, amount));
    }
    let per_s = u128::from(N) * 1_000_000 / elapsed.as_micros().max(1);
    println!(
        "eth deposits: {N} deposits of one block seen and credited in {} ms: {per_s} per second",
        elapsed.as_millis()
    );
    rig.audit();
}

#[test]
fn a_spend_with_the_hot_key_outside_kinko_halts_the_asset_and_opens_an_incident_within_one_poll() {
    use kinko_chain::eth::{Branch, Eip1559};
    use kinko_custody::eth::EthReconcile;
    use kinko_signer::eth::{EthPolicy, EthSigner, Intent, NonceBook, Payment};
    let rig = EthRig::start();
    let rpc = rig.anvil.rpc();
    // Customers hold 5 ETH (a credited deposit); the hot wallet holds 10.
    let mut w = rig.watcher(rig.eth, EthAsset::Ether);
    let alice = rig.user(1);
    let a = w.assign_address(alice).unwrap();
    let t = rig.pay_eth(&a, 5 * ETH);
    rig.anvil.mine_until_mined(&t, 1).unwrap();
    rpc.mine(CONFIRMATIONS).unwrap();
    w.poll().unwrap();
    assert_eq!(rig.customer(alice, rig.eth).1, 5 * ETH);
    let hot = rig.keys.address(Branch::Hot, 0).unwrap();
    rpc.set_balance(&hot, 10 * ETH).unwrap();
    let mut rec = EthReconcile::new(rpc.clone(), rig.link.clone(), rig.eth, EthAsset::Ether, hot, 0);
    assert_eq!(rec.poll().unwrap().incident, None);

    // A withdrawal kinko signed and recorded is not an outflow.
    let master = rig.master();
    let policy = EthPolicy {
        chain_id: kinko_chain::eth::anvil::CHAIN_ID,
        tokens: vec![rig.token],
        max_fee_per_gas_max: 500_000_000_000,
        priority_fee_max: 10_000_000_000,
        gas_limit_max: 100_000,
        fee_max_wei: 100_000 * 500_000_000_000,
    };
    let mut signer = EthSigner::new(policy, &master, NonceBook::default()).unwrap();
    assert_eq!(signer.hot(), hot);
    let dest = EthAddress([0xde; 20]);
    let tx = |nonce: u64, to: EthAddress, value: u128| Eip1559 {
        chain_id: kinko_chain::eth::anvil::CHAIN_ID,
        nonce,
        max_priority_fee_per_gas: 1_000_000_000,
        max_fee_per_gas: 50_000_000_000,
        gas_limit: 21_000,
        to,
        value,
        data: Vec::new(),
    };
    let intent = Intent {
        payment: Payment::Ether,
        destination: dest,
        amount: ETH,
    };
    let (_, ours) = signer
        .sign_withdrawal(&intent, &tx(0, dest, ETH).encode_unsigned())
        .unwrap();
    rec.record_ours(ours.hash);
    rpc.send_raw(&ours.raw).unwrap();
    rig.anvil.mine_until_mined(&ours.hash, 1).unwrap();
    assert_eq!(rec.poll().unwrap().incident, None);
    assert!(rig.link.view(|e| e.asset(rig.eth).unwrap().switches.withdrawals));

    // The thief, holding the hot key, sends 3 ETH away at the next nonce.
    let thief = EthAddress([0x7f; 20]);
    let stolen = rig.keys.sign(Branch::Hot, 0, &tx(1, thief, 3 * ETH)).unwrap();
    rpc.send_raw(&stolen.raw).unwrap();
    let receipt = rig.anvil.mine_until_mined(&stolen.hash, 1).unwrap();
    let gas = receipt.gas_used * receipt.effective_gas_price;

    // One poll: the asset halts and the incident names the loss, split customer / company.
    let s = rec.poll().unwrap();
    assert_eq!(s.unapproved, vec![stolen.hash]);
    assert_eq!(s.missing, 3 * ETH + gas);
    let id = s.incident.expect("an incident");
    let incident = rig
        .link
        .view(|e| e.admin().open_incidents().find(|i| i.id == id).cloned())
        .unwrap();
    assert_eq!(incident.kind, "unapproved_outflow");
    assert_eq!(incident.asset, Some(rig.eth));
    assert_eq!(incident.missing.0, 3 * ETH + gas);
    assert_eq!(incident.txids, vec![format!("0x{}", hex::encode(stolen.hash))]);
    assert_eq!(
        incident.customer_share.0 + incident.company_share.0,
        incident.missing.0,
        "the loss is split between customers' and the company's funds"
    );
    assert!(
        incident.customer_share.0 > 0,
        "customers' coins were in the hot wallet"
    );
    assert!(
        !rig.link.view(|e| e.asset(rig.eth).unwrap().switches.withdrawals),
        "ETH withdrawals halted"
    );
    // The next poll does not open it again.
    rpc.mine(1).unwrap();
    assert_eq!(rec.poll().unwrap().incident, None);
    assert_eq!(rig.link.view(|e| e.admin().open_incidents().count()), 1);
    rig.audit();
}

mod cold;

mod withdrawals {
    use super::*;
    use kinko_api::vault::Vault;
    use kinko_chain::eth::{Branch, EthAddress};
    use kinko_core::identity::{Action, ProofFactor, SessionLevel, StepUp, Via};
    use kinko_core::wallet::{AddressId, Withdrawal, WithdrawalStatus};
    use kinko_core::Amount;
    use kinko_custody::eth::{EthWithdrawalConfig, EthWithdrawals, SocketSigner};
    use kinko_custody::signer_feed::SignerFeed;
    use kinko_signer::{ManualClock, Server};
    use std::path::PathBuf;
    use std::sync::Arc;

    /// The signer's waiting periods (maturity, cooling), which its clock is moved past.
    pub(super) const SIGNER_WAIT_S: u64 = 3_600;

    fn now_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    /// A real signer for the rig's keystore, in-process on a real Unix socket: `[eth]` with
    /// the rig's token, the policy's amounts in wei.
    pub(super) fn start_signer(rig: &EthRig, clock: &Arc<ManualClock>) -> (Server, PathBuf) {
        start_signer_with(rig, clock, "")
    }

    /// [`start_signer`] with more lines in its `[eth]` section.
    pub(super) fn start_signer_with(
        rig: &EthRig,
        clock: &Arc<ManualClock>,
        eth_extra: &str,
    ) -> (Server, PathBuf) {
        let dir = rig.dir.path();
        let socket = dir.join("signer").join("signer.sock");
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let text = format!(
            r#"
network = "litecoin-regtest"
asset = "ETH"
asset_id = {eth}
keystore = "{KEYSTORE}"
log = "signer.log"
socket = "signer/signer.sock"
[policy]
per_tx_max_sats = {per_tx}
window_max_sats = {window}
totp_budget_sats = {window}
address_cooling_s = {SIGNER_WAIT_S}
credential_maturity_s = {SIGNER_WAIT_S}
registration_maturity_s = {SIGNER_WAIT_S}
proof_max_age_s = 21600
fee_max_sats = 1000000
[review]
dual_approval_sats = {window}
[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
[eth]
chain_id = {chain}
max_fee_per_gas_max = 500000000000
priority_fee_max = 10000000000
{eth_extra}
[[eth.tokens]]
asset_id = {usdc}
contract = "{token}"
per_tx_max = 100000000
window_max = 300000000
"#,
            eth = rig.eth.0,
            usdc = rig.usdc.0,
            per_tx = 3 * ETH,
            window = 9 * ETH,
            chain = kinko_chain::eth::anvil::CHAIN_ID,
            token = rig.token.checksummed(),
        );
        let config = kinko_signer::Config::parse(&text, dir).unwrap();
        let keys = Keystore::open_with(&dir.join(KEYSTORE), PASSPHRASE, true).unwrap();
        let server = Server::start(config, keys, clock.clone()).expect("the signer starts");
        (server, socket)
    }

    pub(super) struct Customer {
        pub(super) user: UserId,
        session: [u8; 32],
        secret: Vec<u8>,
    }

    fn totp_proof(rig: &EthRig, c: &Customer, action: &Action) -> StepUp {
        let now = now_ns();
        let last = rig
            .link
            .view(|e| e.identity().user(c.user).map_or(0, |u| u.last_totp_step));
        let step = (now / 30_000_000_000).max(last + 1);
        let code = format!("{:06}", kinko_api::totp::code_at(&c.secret, step));
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

    pub(super) fn customer(rig: &EthRig, n: u32) -> Customer {
        let user = rig.user(n);
        let session = *blake3::hash(format!("session {n}").as_bytes()).as_bytes();
        rig.link
            .submit(Command::Identity(IdentityCommand::OpenSession {
                user,
                token_hash: session,
                level: SessionLevel::Full,
                expires_ns: now_ns() + 86_400_000_000_000,
                device: "rig".into(),
                ip: "127.0.0.1".into(),
                password_hash_digest: *blake3::hash(PASSWORD_HASH.as_bytes()).as_bytes(),
            }))
            .unwrap()
            .unwrap();
        let secret: Vec<u8> = (0..20)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n as u8))
            .collect();
        let sealed = Vault::from_key([7; 32]).seal(&secret);
        rig.link
            .submit(Command::Identity(IdentityCommand::EnrolTotp {
                user,
                sealed_secret: sealed,
                first_step: now_ns() / 30_000_000_000 - 1,
                proof: None,
                recovery: vec![],
            }))
            .unwrap()
            .unwrap();
        Customer {
            user,
            session,
            secret,
        }
    }

    /// A withdrawal address the user approved with a TOTP code (the signer takes it with that
    /// approval).
    pub(super) fn whitelist(rig: &EthRig, c: &Customer, asset: AssetId, address: &EthAddress) -> AddressId {
        let text = address.checksummed();
        let action = Action::AddWithdrawalAddress {
            user: c.user,
            asset,
            address: text.clone(),
            label: "mine".into(),
        };
        match rig
            .link
            .submit(Command::AddWithdrawalAddress {
                user: c.user,
                asset,
                address: text,
                label: "mine".into(),
                cooling_ns: 0,
                by: kinko_core::engine::AddressAuth::User {
                    via: Via::Session(c.session),
                    proof: totp_proof(rig, c, &action),
                },
            })
            .unwrap()
            .unwrap()
        {
            Reply::WithdrawalAddress(a) => a.id,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn withdraw(rig: &EthRig, c: &Customer, address: AddressId, amount: u128) -> Withdrawal {
        let action: Action = rig.link.view(|e| {
            e.wallet()
                .withdrawal_action(c.user, address, Amount(amount), None)
                .unwrap()
        });
        match rig
            .link
            .submit(Command::RequestWithdrawal {
                user: c.user,
                address,
                amount: Amount(amount),
                client_id: None,
                via: Via::Session(c.session),
                proof: totp_proof(rig, c, &action),
            })
            .unwrap()
            .unwrap()
        {
            Reply::Withdrawal(w) => w,
            other => panic!("{other:?}"),
        }
    }

    pub(super) fn status(rig: &EthRig, id: kinko_core::wallet::WithdrawalId) -> Withdrawal {
        rig.link.view(|e| e.wallet().withdrawal(id).unwrap().clone())
    }

    #[test]
    fn eth_and_token_withdrawals_are_signed_recorded_broadcast_and_completed_at_depth() {
        let rig = EthRig::start();
        let rpc = rig.anvil.rpc();
        // Two customers (each TOTP code is good for one 30 s step, give or take one: two
        // approvals each): 5 ETH for one, 20 USDC for the other, credited.
        let c = customer(&rig, 1);
        let d = customer(&rig, 2);
        let e = customer(&rig, 3);
        let mut de = rig.watcher(rig.eth, EthAsset::Ether);
        let mut dt = rig.watcher(rig.usdc, EthAsset::Token(rig.token));
        let a = de.assign_address(c.user).unwrap();
        let b = dt.assign_address(d.user).unwrap();
        let ea = de.assign_address(e.user).unwrap();
        rig.pay_eth(&a, 5 * ETH);
        rig.pay_eth(&ea, ETH);
        let t = rig.pay_token(&b, 20_000_000);
        rig.anvil.mine_until_mined(&t, 1).unwrap();
        rpc.mine(CONFIRMATIONS).unwrap();
        de.poll().unwrap();
        dt.poll().unwrap();
        assert_eq!(rig.customer(c.user, rig.eth).1, 5 * ETH);
        assert_eq!(rig.customer(d.user, rig.usdc).1, 20_000_000);
        // The hot wallet is funded directly: this test is about withdrawals (sweeps bring
        // deposits to it in `sweeps`).
        let hot = rig.keys.address(Branch::Hot, 0).unwrap();
        rpc.set_balance(&hot, 5 * ETH).unwrap();
        let faucet = rig.anvil.faucet().unwrap();
        let f = rpc
            .send_from_dev(&faucet, Some(&rig.token), 0, &erc20_transfer(&hot, 20_000_000))
            .unwrap();
        rig.anvil.mine_until_mined(&f, 1).unwrap();

        let dest = EthAddress([0xde; 20]);
        let eth_addr = whitelist(&rig, &c, rig.eth, &dest);
        let usdc_addr = whitelist(&rig, &d, rig.usdc, &dest);
        let e_addr = whitelist(&rig, &e, rig.eth, &dest);
        // The signer learns the customer's TOTP secret and both addresses from committed
        // state, with the customer's approvals, and takes them after its own waiting periods.
        let clock = Arc::new(ManualClock::at_system_now());
        let (mut signer, socket) = start_signer(&rig, &clock);
        let vault: Arc<dyn kinko_engine::ports::SecretOpener> = Arc::new(Vault::from_key([7; 32]));
        let mut feed = SignerFeed::new(socket.clone(), rig.link.clone(), Some(vault));
        feed.register(&[rig.eth, rig.usdc]).unwrap();
        clock.advance_s(SIGNER_WAIT_S + 1);
        let we = withdraw(&rig, &c, eth_addr, 2 * ETH);
        let wt = withdraw(&rig, &d, usdc_addr, 7_000_000);
        let mut port = SocketSigner::new(socket, rig.link.clone());
        let cfg = |gas: u64| EthWithdrawalConfig {
            chain_id: kinko_chain::eth::anvil::CHAIN_ID,
            gas_limit: gas,
            priority_fee: 1_000_000_000,
            max_fee_cap: 500_000_000_000,
            finality_depth: 3,
        };
        let mut ew = EthWithdrawals::new(
            rpc.clone(),
            rig.link.clone(),
            rig.eth,
            EthAsset::Ether,
            hot,
            cfg(21_000),
        );
        let s = ew.poll(&mut port).unwrap();
        assert_eq!(s.signed, 1, "{s:?}");
        let w = status(&rig, we.id);
        assert_eq!(w.status, WithdrawalStatus::Broadcast);
        assert_eq!(w.network_fee.0, 0, "gas is booked from the receipt at completion");
        // The token withdrawal continues at the next nonce of kinko's records (one nonce
        // book per key at the signer).
        let mut tw = EthWithdrawals::new(
            rpc.clone(),
            rig.link.clone(),
            rig.usdc,
            EthAsset::Token(rig.token),
            hot,
            cfg(80_000),
        )
        .with_gas_asset(rig.eth);
        tw.set_next_nonce(ew.next_nonce().unwrap());
        assert_eq!(tw.poll(&mut port).unwrap().signed, 1);
        let w = status(&rig, wt.id);
        assert_eq!(w.status, WithdrawalStatus::Broadcast);
        assert_eq!(
            w.network_fee.0, 0,
            "gas is ETH: never booked in the token's ledger"
        );

        // Mined, then final at depth 3.
        rpc.mine(1).unwrap();
        assert_eq!(rpc.balance(&dest, "latest").unwrap(), 2 * ETH);
        assert_eq!(rpc.token_balance(&rig.token, &dest, "latest").unwrap(), 7_000_000);
        assert_eq!(ew.poll(&mut port).unwrap().completed, 0);
        rpc.mine(2).unwrap();
        assert_eq!(ew.poll(&mut port).unwrap().completed, 1);
        assert_eq!(tw.poll(&mut port).unwrap().completed, 1);
        assert_eq!(status(&rig, we.id).status, WithdrawalStatus::Completed);
        assert_eq!(status(&rig, wt.id).status, WithdrawalStatus::Completed);
        // The exact gas of both (`gasUsed × effectiveGasPrice`), booked in the ETH ledger once
        // per transaction; none in the token's.
        let gas_of = |id| {
            let raw = hex::decode(status(&rig, id).raw_tx.unwrap()).unwrap();
            let r = rpc
                .receipt(&kinko_chain::eth::Eip1559::tx_hash(&raw))
                .unwrap()
                .unwrap();
            r.gas_used * r.effective_gas_price
        };
        let gas = gas_of(we.id) + gas_of(wt.id);
        assert!(gas > 0);
        let fees = |asset| {
            rig.link.view(|e| {
                let a = e.asset(asset).unwrap();
                [
                    kinko_core::SystemAccount::NetworkFees,
                    kinko_core::SystemAccount::FeeRevenue,
                    kinko_core::SystemAccount::CompanyTreasury,
                ]
                .map(|w| e.ledger().account(a.system_account(w)).unwrap().balance())
            })
        };
        let [net, revenue, _] = fees(rig.eth);
        // The ETH withdrawal's fee (fee revenue) paid first, the rest from customers' coins.
        assert_eq!(net + (we.fee.0 as i128 - revenue), gas as i128);
        assert_eq!(fees(rig.usdc)[0], 0, "the token's ledger never sees ETH");
        assert_eq!(ew.poll(&mut port).unwrap().completed, 0);
        assert_eq!(fees(rig.eth)[0], net, "booked once");
        assert_eq!(rig.customer(c.user, rig.eth).1, 3 * ETH - we.fee.0);
        assert_eq!(rig.customer(d.user, rig.usdc).1, 13_000_000 - wt.fee.0);
        assert_eq!(rpc.nonce(&hot, "latest").unwrap(), 2);
        // The signer logged both signatures, each after the withdrawal's own checks.
        let log = std::fs::read_to_string(rig.dir.path().join("signer.log")).unwrap();
        assert_eq!(log.matches(r#""kind":"eth_signed""#).count(), 2, "{log}");

        // The signer cannot be reached: nothing is recorded, the withdrawal stays `Signing`
        // and the poll reports it; a refusal then fails the withdrawal with the signer's code.
        signer.stop();
        let wx = withdraw(&rig, &e, e_addr, ETH / 2);
        let err = ew.poll(&mut port).unwrap_err();
        assert!(
            matches!(err, kinko_custody::eth::EthWatchError::Signer(_)),
            "{err}"
        );
        assert_eq!(status(&rig, wx.id).status, WithdrawalStatus::Signing);
        signer = start_signer(&rig, &clock).0;
        let halted =
            kinko_signer_proto::client::SignerClient::connect(&rig.dir.path().join("signer/signer.sock"))
                .unwrap()
                .call(&kinko_signer_proto::protocol::Request::Halt {
                    reason: "drill".into(),
                    source: "test".into(),
                })
                .unwrap();
        assert_eq!(halted, kinko_signer_proto::protocol::Response::Ok);
        assert_eq!(ew.poll(&mut port).unwrap().failed, 1);
        let w = status(&rig, wx.id);
        assert_eq!(w.status, WithdrawalStatus::Failed);
        assert!(
            w.reason.as_deref().unwrap_or("").contains("SIGNER_HALTED"),
            "{w:?}"
        );
        assert_eq!(
            rig.customer(e.user, rig.eth).1,
            ETH,
            "the customer's funds are back"
        );
        signer.stop();
        rig.audit();
    }

    /// A withdrawal whose destination is another customer's deposit address is a deposit for
    /// them: the hot key's payment is credited to that customer at depth, like any other.
    #[test]
    fn a_withdrawal_to_another_customers_deposit_address_is_credited_to_them() {
        let rig = EthRig::start();
        let rpc = rig.anvil.rpc();
        let c = customer(&rig, 1);
        let e = customer(&rig, 2);
        let mut de = rig.watcher(rig.eth, EthAsset::Ether);
        let a = de.assign_address(c.user).unwrap();
        let theirs = de.assign_address(e.user).unwrap();
        rig.pay_eth(&a, 5 * ETH);
        rpc.mine(CONFIRMATIONS).unwrap();
        de.poll().unwrap();
        assert_eq!(rig.customer(c.user, rig.eth).1, 5 * ETH);
        assert_eq!(rig.customer(e.user, rig.eth).1, 0);
        let hot = rig.keys.address(Branch::Hot, 0).unwrap();
        rpc.set_balance(&hot, 5 * ETH).unwrap();

        let to_them = whitelist(&rig, &c, rig.eth, &theirs);
        let clock = Arc::new(ManualClock::at_system_now());
        let (signer, socket) = start_signer(&rig, &clock);
        let vault: Arc<dyn kinko_engine::ports::SecretOpener> = Arc::new(Vault::from_key([7; 32]));
        let mut feed = SignerFeed::new(socket.clone(), rig.link.clone(), Some(vault));
        feed.register(&[rig.eth, rig.usdc]).unwrap();
        clock.advance_s(SIGNER_WAIT_S + 1);
        let w = withdraw(&rig, &c, to_them, 2 * ETH);
        let mut port = SocketSigner::new(socket, rig.link.clone());
        let mut ew = EthWithdrawals::new(
            rpc.clone(),
            rig.link.clone(),
            rig.eth,
            EthAsset::Ether,
            hot,
            EthWithdrawalConfig {
                chain_id: kinko_chain::eth::anvil::CHAIN_ID,
                gas_limit: 21_000,
                priority_fee: 1_000_000_000,
                max_fee_cap: 500_000_000_000,
                finality_depth: 3,
            },
        );
        assert_eq!(ew.poll(&mut port).unwrap().signed, 1);
        rpc.mine(1).unwrap();
        assert_eq!(rpc.balance(&theirs, "latest").unwrap(), 2 * ETH);
        // Not before the configured confirmations, then once.
        de.poll().unwrap();
        assert_eq!(rig.customer(e.user, rig.eth).1, 0);
        rpc.mine(CONFIRMATIONS).unwrap();
        de.poll().unwrap();
        assert_eq!(ew.poll(&mut port).unwrap().completed, 1);
        assert_eq!(status(&rig, w.id).status, WithdrawalStatus::Completed);
        assert_eq!(rig.customer(e.user, rig.eth).1, 2 * ETH);
        assert_eq!(rig.customer(c.user, rig.eth).1, 3 * ETH - w.fee.0);
        de.poll().unwrap();
        assert_eq!(rig.customer(e.user, rig.eth).1, 2 * ETH, "credited once");
        signer.stop();
        rig.audit();
    }
}

mod lost_answers {
    use super::withdrawals::*;
    use super::*;
    use kinko_api::vault::Vault;
    use kinko_chain::eth::Branch;
    use kinko_core::wallet::{Withdrawal, WithdrawalStatus};
    use kinko_custody::eth::{
        EthSignError, EthSignerPort, EthWithdrawalConfig, EthWithdrawals, SocketSigner,
    };
    use kinko_custody::signer_feed::SignerFeed;
    use kinko_signer::ManualClock;
    use std::sync::Arc;

    /// The signer over its socket, whose first answer is lost on the way back.
    struct Lossy {
        inner: SocketSigner,
        lost: bool,
    }

    impl EthSignerPort for Lossy {
        fn sign_withdrawal(&mut self, w: &Withdrawal, raw: &[u8]) -> Result<Vec<u8>, EthSignError> {
            let answer = self.inner.sign_withdrawal(w, raw)?;
            if !self.lost {
                self.lost = true;
                return Err(EthSignError::Unavailable("the answer was lost".into()));
            }
            Ok(answer)
        }
    }

    #[test]
    fn after_a_lost_answer_its_nonce_stays_reserved_and_a_restart_asks_for_the_same_transaction() {
        let rig = EthRig::start();
        let rpc = rig.anvil.rpc();
        // One customer with 3 ETH, another with 20 USDC; the hot wallet funded with both.
        let (c, d) = (customer(&rig, 1), customer(&rig, 2));
        let mut de = rig.watcher(rig.eth, EthAsset::Ether);
        let mut dt = rig.watcher(rig.usdc, EthAsset::Token(rig.token));
        let a = de.assign_address(c.user).unwrap();
        let b = dt.assign_address(d.user).unwrap();
        rig.pay_eth(&a, 3 * ETH);
        let t = rig.pay_token(&b, 20_000_000);
        rig.anvil.mine_until_mined(&t, 1).unwrap();
        rpc.mine(CONFIRMATIONS).unwrap();
        de.poll().unwrap();
        dt.poll().unwrap();
        let hot = rig.keys.address(Branch::Hot, 0).unwrap();
        rpc.set_balance(&hot, 3 * ETH).unwrap();
        let f = rig.pay_token(&hot, 20_000_000);
        rig.anvil.mine_until_mined(&f, 1).unwrap();
        let dest = EthAddress([0xde; 20]);
        let address = whitelist(&rig, &c, rig.eth, &dest);
        let token_address = whitelist(&rig, &d, rig.usdc, &dest);
        let clock = Arc::new(ManualClock::at_system_now());
        let (signer, socket) = start_signer(&rig, &clock);
        let vault: Arc<dyn kinko_engine::ports::SecretOpener> = Arc::new(Vault::from_key([7; 32]));
        SignerFeed::new(socket.clone(), rig.link.clone(), Some(vault))
            .register(&[rig.eth, rig.usdc])
            .unwrap();
        clock.advance_s(SIGNER_WAIT_S + 1);
        let w = withdraw(&rig, &c, address, ETH);
        let wt = withdraw(&rig, &d, token_address, 7_000_000);
        let cfg = EthWithdrawalConfig {
            chain_id: kinko_chain::eth::anvil::CHAIN_ID,
            gas_limit: 21_000,
            priority_fee: 1_000_000_000,
            max_fee_cap: 500_000_000_000,
            finality_depth: 3,
        };
        let state = rig.dir.path().join("custody");
        let build = || {
            EthWithdrawals::new(
                rpc.clone(),
                rig.link.clone(),
                rig.eth,
                EthAsset::Ether,
                hot,
                cfg.clone(),
            )
            .with_pending_dir(&state, "ETH")
        };
        // The signer signs; its answer is lost: nothing recorded, the withdrawal waits.
        let mut lossy = Lossy {
            inner: SocketSigner::new(socket.clone(), rig.link.clone()),
            lost: false,
        };
        let mut ew = build();
        let err = ew.poll(&mut lossy).unwrap_err();
        assert!(
            matches!(err, kinko_custody::eth::EthWatchError::Signer(_)),
            "{err}"
        );
        assert_eq!(status(&rig, w.id).status, WithdrawalStatus::Signing);
        // Its nonce stays reserved: the token withdrawal takes the next one (at the same nonce
        // the signer would refuse it as a replacement that changes the payment, and halt).
        assert_eq!(ew.next_nonce(), Some(1));
        let mut tw = EthWithdrawals::new(
            rpc.clone(),
            rig.link.clone(),
            rig.usdc,
            EthAsset::Token(rig.token),
            hot,
            EthWithdrawalConfig {
                gas_limit: 80_000,
                ..cfg.clone()
            },
        );
        tw.set_next_nonce(ew.next_nonce().unwrap());
        let mut port = SocketSigner::new(socket.clone(), rig.link.clone());
        assert_eq!(tw.poll(&mut port).unwrap().signed, 1);
        assert_eq!(status(&rig, wt.id).status, WithdrawalStatus::Broadcast);
        assert_eq!(ew.kept_next_nonce(), Some(1), "the lost one is kept, at nonce 0");
        // The fees move (empty blocks lower the base fee) and kinko restarts.
        let base = |rpc: &kinko_chain::eth::EthRpc| rpc.block("latest").unwrap().unwrap().base_fee_per_gas;
        let before = base(&rpc);
        rpc.mine(8).unwrap();
        assert_ne!(
            base(&rpc),
            before,
            "a transaction built now would carry other fees"
        );
        let mut restarted = build();
        restarted.set_next_nonce(2);
        let s = restarted.poll(&mut port).unwrap();
        assert_eq!(s.signed, 1, "{s:?}");
        assert_eq!(status(&rig, w.id).status, WithdrawalStatus::Broadcast);
        // The signer signed those bytes again (one signature at nonce 0 in its nonce book), not
        // another transaction at that nonce.
        let log = std::fs::read_to_string(rig.dir.path().join("signer.log")).unwrap();
        assert_eq!(log.matches(r#""kind":"eth_signed""#).count(), 2, "{log}");
        assert!(!log.contains("REPLACEMENT_INVALID"), "{log}");
        rpc.mine(1).unwrap();
        assert_eq!(rpc.balance(&dest, "latest").unwrap(), ETH);
        assert_eq!(rpc.token_balance(&rig.token, &dest, "latest").unwrap(), 7_000_000);
        assert_eq!(rpc.nonce(&hot, "latest").unwrap(), 2);
        assert!(
            std::fs::read_dir(&state).unwrap().next().is_none(),
            "the kept transaction is forgotten once recorded"
        );
        signer.stop();
        rig.audit();
    }
}

/// Custody drives sweeps (docs/design/ethereum.md, "Sweeps and gas"): credited deposits go to
/// the hot address through the real signer, a token deposit after a gas top-up from hot, a
/// small one waits; each is recorded before broadcast, survives a restart without a second
/// sweep, and its exact gas is booked in the ETH ledger once.
mod sweeps {
    use super::withdrawals::start_signer;
    use super::*;
    use kinko_api::vault::Vault;
    use kinko_chain::eth::Branch;
    use kinko_core::SystemAccount;
    use kinko_custody::eth_service::{EthAssetConfig, EthCustody, EthCustodyConfig};
    use kinko_signer::ManualClock;
    use std::sync::Arc;

    pub(super) fn custody(rig: &EthRig, socket: &std::path::Path, state: &std::path::Path) -> EthCustody {
        let cfg = EthCustodyConfig {
            rpc_url: rig.anvil.url(),
            chain_id: kinko_chain::eth::anvil::CHAIN_ID,
            account: rig.keys.xpub(),
            signer_socket: socket.to_path_buf(),
            confirmations: CONFIRMATIONS,
            finality_depth: CONFIRMATIONS,
            poll: std::time::Duration::from_millis(100),
            start_block: 0,
            priority_fee: 1_000_000_000,
            max_fee_cap: 500_000_000_000,
            sweep_gas_max_bps: 1_000,
            assets: vec![
                EthAssetConfig {
                    code: "ETH".into(),
                    kind: EthAsset::Ether,
                    gas_limit: 21_000,
                    hot_share_bps: 10_000,
                    hot_cap: u128::MAX,
                    sweep_min: ETH / 100,
                },
                EthAssetConfig {
                    code: "USDC".into(),
                    kind: EthAsset::Token(rig.token),
                    gas_limit: 80_000,
                    hot_share_bps: 10_000,
                    hot_cap: u128::MAX,
                    sweep_min: 10_000_000,
                },
            ],
            state_dir: Some(state.to_path_buf()),
            cold_contract: None,
        };
        let vault: Arc<dyn kinko_engine::ports::SecretOpener> = Arc::new(Vault::from_key([7; 32]));
        EthCustody::new(cfg, rig.link.clone(), Some(vault)).unwrap()
    }

    fn sys(rig: &EthRig, asset: AssetId, w: SystemAccount) -> i128 {
        rig.link.view(|e| {
            let a = e.asset(asset).unwrap();
            e.ledger().account(a.system_account(w)).unwrap().balance()
        })
    }

    /// What the node holds of ETH / the token on the hot address and the deposit addresses.
    fn node(rig: &EthRig, addresses: &[EthAddress]) -> (u128, u128) {
        let rpc = rig.anvil.rpc();
        addresses.iter().fold((0, 0), |(e, t), a| {
            (
                e + rpc.balance(a, "latest").unwrap(),
                t + rpc.token_balance(&rig.token, a, "latest").unwrap(),
            )
        })
    }

    #[test]
    fn credited_deposits_are_swept_to_hot_with_top_ups_once_across_a_restart_and_their_gas_booked() {
        let rig = EthRig::start();
        let rpc = rig.anvil.rpc();
        let clock = Arc::new(ManualClock::at_system_now());
        let (signer, socket) = start_signer(&rig, &clock);
        let state = rig.dir.path().join("custody");
        std::fs::create_dir_all(&state).unwrap();
        let hot = rig.keys.address(Branch::Hot, 0).unwrap();
        // Three customers: 1 ETH; 20 USDC (a top-up pays its sweep's gas); 5 USDC (below
        // sweep_min: it waits).
        let (a, b, c) = (rig.user(1), rig.user(2), rig.user(3));
        let de = rig.watcher(rig.eth, EthAsset::Ether);
        let dt = rig.watcher(rig.usdc, EthAsset::Token(rig.token));
        let (aa, ba, ca) = (
            de.assign_address(a).unwrap(),
            dt.assign_address(b).unwrap(),
            dt.assign_address(c).unwrap(),
        );
        // One address per user for ETH and the token, as the gateway assigns them.
        assert_eq!(de.assign_address(b).unwrap(), ba);
        assert_eq!(dt.assign_address(a).unwrap(), aa);
        let mut k = custody(&rig, &socket, &state);
        let t1 = rig.pay_eth(&aa, ETH);
        let t2 = rig.pay_token(&ba, 20_000_000);
        let t3 = rig.pay_token(&ca, 5_000_000);
        rpc.mine(1).unwrap();
        for t in [t1, t2, t3] {
            assert!(rpc.receipt(&t).unwrap().is_some(), "mined in one block");
        }
        let all = [hot, aa, ba, ca];
        let before = node(&rig, &all);
        // Pending: nothing swept yet.
        k.poll().unwrap();
        assert!(k.sweeps_in_flight().is_empty());
        rpc.mine(CONFIRMATIONS).unwrap();
        // Credited: the ETH sweep is signed and recorded before broadcast; the token sweep
        // waits for hot to hold the ETH of its gas top-up.
        k.poll().unwrap();
        assert_eq!(rig.customer(a, rig.eth).1, ETH);
        assert_eq!(rig.customer(b, rig.usdc).1, 20_000_000);
        use kinko_custody::eth_sweep::InternalKind;
        let kinds = |k: &EthCustody| -> Vec<(InternalKind, u32)> {
            k.sweeps_in_flight().iter().map(|t| (t.kind, t.index)).collect()
        };
        let (ia, ib) = (u32::try_from(a.0).unwrap(), u32::try_from(b.0).unwrap());
        assert_eq!(kinds(&k), vec![(InternalKind::EthSweep, ia)]);
        let f = k.sweeps_in_flight().to_vec();
        let saved = std::fs::read_to_string(state.join("ETH.internal-txs.json")).unwrap();
        assert!(
            saved.contains(f[0].signed.as_deref().unwrap()),
            "recorded with its signed bytes"
        );

        // A restart before it is mined: the same transaction is re-sent, no second sweep.
        drop(k);
        let mut k = custody(&rig, &socket, &state);
        k.poll().unwrap();
        assert_eq!(k.sweeps_in_flight(), &f[..]);
        let log = || std::fs::read_to_string(rig.dir.path().join("signer.log")).unwrap();
        assert_eq!(
            log().matches(r#""request":"sign_eth_sweep""#).count(),
            1,
            "{}",
            log()
        );
        rpc.mine(1).unwrap();
        assert!(rpc.balance(&hot, "latest").unwrap() > ETH * 9 / 10);
        // Hot has ETH: the top-up; once mined, the token sweep.
        k.poll().unwrap();
        assert!(
            kinds(&k).contains(&(InternalKind::GasTopup, ib)),
            "{:?}",
            kinds(&k)
        );
        rpc.mine(1).unwrap();
        k.poll().unwrap();
        assert!(
            kinds(&k).contains(&(InternalKind::TokenSweep, ib)),
            "{:?}",
            kinds(&k)
        );
        rpc.mine(1).unwrap();
        k.poll().unwrap();
        rpc.mine(1).unwrap();
        for _ in 0..CONFIRMATIONS + 1 {
            k.poll().unwrap();
            rpc.mine(1).unwrap();
        }
        k.poll().unwrap();
        assert!(k.sweeps_in_flight().is_empty(), "{:?}", k.sweeps_in_flight());
        assert_eq!(rpc.token_balance(&rig.token, &hot, "latest").unwrap(), 20_000_000);
        assert_eq!(
            rpc.token_balance(&rig.token, &ca, "latest").unwrap(),
            5_000_000,
            "a deposit below sweep_min waits"
        );
        assert_eq!(rpc.token_balance(&rig.token, &ba, "latest").unwrap(), 0);
        assert_eq!(rpc.nonce(&hot, "latest").unwrap(), 1, "one top-up from hot");
        let log = log();
        assert_eq!(log.matches(r#""request":"sign_eth_sweep""#).count(), 2, "{log}");
        assert_eq!(
            log.matches(r#""request":"sign_eth_gas_topup""#).count(),
            1,
            "{log}"
        );

        // The gas of all three, exactly, in the ETH ledger (none in the token's): the node
        // holds what the ledger says.
        let after = node(&rig, &all);
        let gas = before.0 - after.0;
        assert!(gas > 0);
        assert_eq!(after.1, before.1, "tokens only moved between our addresses");
        let booked = sys(&rig, rig.eth, SystemAccount::NetworkFees)
            + sys(&rig, rig.eth, SystemAccount::FeeRevenue).abs()
            + sys(&rig, rig.eth, SystemAccount::CompanyTreasury).abs();
        assert_eq!(booked, gas as i128);
        assert_eq!(sys(&rig, rig.usdc, SystemAccount::NetworkFees), 0);
        assert_eq!(
            sys(&rig, rig.eth, SystemAccount::HotWallet),
            after.0 as i128,
            "ETH: node = ledger"
        );
        assert_eq!(sys(&rig, rig.usdc, SystemAccount::HotWallet), after.1 as i128);
        // The top-up is the hot wallet's own ETH: no deposit of the customer it paid.
        assert_eq!(rig.statuses(rig.eth).len(), 1, "{:?}", rig.statuses(rig.eth));
        // Normal operation opened no incident.
        assert_eq!(rig.link.view(|e| e.admin().open_incidents().count()), 0);
        assert!(rig.link.view(|e| e.asset(rig.eth).unwrap().switches.withdrawals));
        signer.stop();
        rig.audit();
    }

    /// Theft with keys of ours used outside kinko (the thief derives them from the seed, as one
    /// holding it would), each caught within one poll with the loss split customer / company:
    /// ETH from a deposit key, the token from a deposit key, ETH from the hot key, and a drop
    /// of the hot balance no transaction explains. Sweeps before them trip nothing.
    #[test]
    fn spends_from_a_deposit_or_the_hot_key_outside_kinko_and_unexplained_drops_halt_within_one_poll() {
        use kinko_chain::eth::Eip1559;
        use kinko_core::admin::Incident;
        let rig = EthRig::start();
        let rpc = rig.anvil.rpc();
        let clock = Arc::new(ManualClock::at_system_now());
        let (signer, socket) = start_signer(&rig, &clock);
        let state = rig.dir.path().join("custody");
        std::fs::create_dir_all(&state).unwrap();
        let hot = rig.keys.address(Branch::Hot, 0).unwrap();
        let (a, c) = (rig.user(1), rig.user(2));
        let de = rig.watcher(rig.eth, EthAsset::Ether);
        let dt = rig.watcher(rig.usdc, EthAsset::Token(rig.token));
        let aa = de.assign_address(a).unwrap();
        let ca = dt.assign_address(c).unwrap();
        assert_eq!(de.assign_address(c).unwrap(), ca);
        let (ia, ic) = (u32::try_from(a.0).unwrap(), u32::try_from(c.0).unwrap());
        let mut k = custody(&rig, &socket, &state);
        // 2 ETH to A (swept), 5 USDC to C (below sweep_min: it waits there).
        rig.pay_eth(&aa, 2 * ETH);
        rig.pay_token(&ca, 5_000_000);
        for _ in 0..CONFIRMATIONS + 4 {
            rpc.mine(1).unwrap();
            k.poll().unwrap();
        }
        assert!(k.sweeps_in_flight().is_empty(), "{:?}", k.sweeps_in_flight());
        assert!(rpc.balance(&hot, "latest").unwrap() > ETH);
        let incidents = || -> Vec<Incident> { rig.link.view(|e| e.admin().incidents.clone()) };
        assert!(incidents().is_empty(), "sweeps are no outflow: {:?}", incidents());
        let open = |asset: AssetId| rig.link.view(|e| e.asset(asset).unwrap().switches.withdrawals);
        let tx = |nonce: u64, to: EthAddress, value: u128, data: Vec<u8>| Eip1559 {
            chain_id: kinko_chain::eth::anvil::CHAIN_ID,
            nonce,
            max_priority_fee_per_gas: 1_000_000_000,
            max_fee_per_gas: 50_000_000_000,
            gas_limit: 100_000,
            to,
            value,
            data,
        };
        let thief = EthAddress([0x7f; 20]);
        let steal = |branch: Branch, index: u32, from: &EthAddress, t: &dyn Fn(u64) -> Eip1559| {
            let signed = rig
                .keys
                .sign(branch, index, &t(rpc.nonce(from, "latest").unwrap()))
                .unwrap();
            rpc.send_raw(&signed.raw).unwrap();
            let r = rig.anvil.mine_until_mined(&signed.hash, 1).unwrap();
            (
                format!("0x{}", hex::encode(signed.hash)),
                r.gas_used * r.effective_gas_price,
            )
        };
        let check = |i: &Incident, asset: AssetId, kind: &str, missing: u128| {
            assert_eq!(
                (i.kind.as_str(), i.asset, i.missing.0),
                (kind, Some(asset), missing),
                "{i:?}"
            );
            assert_eq!(
                i.customer_share.0 + i.company_share.0,
                i.missing.0,
                "split: {i:?}"
            );
            assert!(i.customer_share.0 > 0, "customers' coins were taken: {i:?}");
        };

        let of = |asset: AssetId| -> Vec<Incident> {
            incidents()
                .into_iter()
                .filter(|i| i.asset == Some(asset))
                .collect()
        };

        // 1. ETH from A's deposit key (a fresh deposit there, pending, not yet swept). The key
        // signs for ETH and the token alike: both halt (the token's incident takes nothing).
        rig.pay_eth(&aa, ETH);
        rpc.mine(1).unwrap();
        k.poll().unwrap();
        let (txid, gas) = steal(Branch::Deposit, ia, &aa, &|n| tx(n, thief, ETH / 2, Vec::new()));
        k.poll().unwrap();
        let eth = of(rig.eth);
        assert_eq!(
            eth.len(),
            1,
            "one incident, the balance check explained by it: {eth:?}"
        );
        check(&eth[0], rig.eth, "unapproved_outflow", ETH / 2 + gas);
        assert_eq!(eth[0].txids, vec![txid.clone()]);
        let usdc = of(rig.usdc);
        assert_eq!(
            (usdc.len(), usdc[0].missing.0, &usdc[0].txids),
            (1, 0, &vec![txid])
        );
        assert!(!open(rig.eth) && !open(rig.usdc), "withdrawals halted");

        // 2. ETH from the hot key: halted while the transaction is still in the pool (the
        // node counts a nonce kinko never built), its amount reported once it is mined.
        let stolen = rig
            .keys
            .sign(
                Branch::Hot,
                0,
                &tx(rpc.nonce(&hot, "latest").unwrap(), thief, ETH / 10, Vec::new()),
            )
            .unwrap();
        rpc.send_raw(&stolen.raw).unwrap();
        k.poll().unwrap();
        let eth = of(rig.eth);
        assert_eq!(eth.len(), 2, "{eth:?}");
        assert_eq!(
            (eth[1].kind.as_str(), eth[1].missing.0),
            ("unapproved_outflow", 0),
            "{eth:?}"
        );
        assert!(eth[1].summary.contains("the hot key"), "{eth:?}");
        assert_eq!(of(rig.usdc).len(), 2, "the key signs for the token too");
        let receipt = rig.anvil.mine_until_mined(&stolen.hash, 1).unwrap();
        let gas = receipt.gas_used * receipt.effective_gas_price;
        k.poll().unwrap();
        let eth = of(rig.eth);
        assert_eq!(eth.len(), 3, "{eth:?}");
        check(&eth[2], rig.eth, "unapproved_outflow", ETH / 10 + gas);
        assert_eq!(eth[2].txids, vec![format!("0x{}", hex::encode(stolen.hash))]);

        // 3. A drop no transaction explains (as a deep reorg would leave): the balance check.
        let held = rpc.balance(&hot, "latest").unwrap();
        rpc.set_balance(&hot, held - ETH / 20).unwrap();
        k.poll().unwrap();
        let eth = of(rig.eth);
        assert_eq!(eth.len(), 4, "{eth:?}");
        check(&eth[3], rig.eth, "hot_shortfall", ETH / 20);
        // 4. The token from C's deposit key (the thief pays its gas): halted from the pool,
        // the amount reported once mined.
        rpc.set_balance(&ca, ETH / 100).unwrap();
        let stolen = rig
            .keys
            .sign(
                Branch::Deposit,
                ic,
                &tx(
                    rpc.nonce(&ca, "latest").unwrap(),
                    rig.token,
                    0,
                    erc20_transfer(&thief, 5_000_000),
                ),
            )
            .unwrap();
        rpc.send_raw(&stolen.raw).unwrap();
        k.poll().unwrap();
        let usdc = of(rig.usdc);
        // (The hot key's theft opened two for the token too: in the pool, then mined.)
        assert_eq!(usdc.len(), 4, "{usdc:?}");
        assert_eq!(usdc[3].missing.0, 0);
        assert!(usdc[3].summary.contains("a deposit key"), "{usdc:?}");
        rig.anvil.mine_until_mined(&stolen.hash, 1).unwrap();
        k.poll().unwrap();
        let usdc = of(rig.usdc);
        assert_eq!(usdc.len(), 5, "{usdc:?}");
        check(&usdc[4], rig.usdc, "unapproved_outflow", 5_000_000);
        assert_eq!(usdc[4].txids, vec![format!("0x{}", hex::encode(stolen.hash))]);
        assert_eq!(of(rig.eth).len(), 6, "in the pool, then its gas from the key");
        let n = incidents().len();
        // Reported once: the next polls add nothing.
        rpc.mine(1).unwrap();
        k.poll().unwrap();
        k.poll().unwrap();
        assert_eq!(incidents().len(), n);
        signer.stop();
        rig.audit();
    }

    /// A restart resumes from the cursors kept in the state directory, not from
    /// `start_block`: blocks before them are not read again, a deposit pending across the
    /// restart is credited once, one that arrived while down is found, and a reorg while down
    /// that took a pending deposit away drops it.
    #[test]
    fn a_restart_resumes_from_the_durable_cursor_loses_nothing_and_credits_nothing_twice() {
        let rig = EthRig::start();
        let rpc = rig.anvil.rpc();
        let clock = Arc::new(ManualClock::at_system_now());
        let (signer, socket) = start_signer(&rig, &clock);
        let state = rig.dir.path().join("custody");
        std::fs::create_dir_all(&state).unwrap();
        // History before kinko's deposits: a restart must not read it again.
        rpc.mine(200).unwrap();
        let (a, b, c) = (rig.user(1), rig.user(2), rig.user(3));
        let de = rig.watcher(rig.eth, EthAsset::Ether);
        let (aa, ba, ca) = (
            de.assign_address(a).unwrap(),
            de.assign_address(b).unwrap(),
            de.assign_address(c).unwrap(),
        );
        let mut k = custody(&rig, &socket, &state);
        k.poll().unwrap();
        assert_eq!(
            k.last_stats("ETH").unwrap().0.scanned_from,
            Some(0),
            "the first start reads from start_block"
        );
        // A deposit to A, pending (one block deep), and one to C in the newest block.
        let ta = rig.pay_eth(&aa, ETH);
        rpc.mine(1).unwrap();
        let tc = rig.pay_eth(&ca, ETH / 4);
        rpc.mine(1).unwrap();
        k.poll().unwrap();
        assert_eq!(rig.statuses(rig.eth).len(), 2);
        let (dep, rec) = k.cursors("ETH").unwrap();
        let head = rpc.block_number().unwrap();
        assert_eq!((dep, rec), (Some(head), Some(head)));
        let kept = std::fs::read_to_string(state.join("ETH.eth-deposits.json")).unwrap();
        assert!(kept.contains(&format!("{}", head)), "{kept}");
        drop(k);

        // While kinko is down: C's block is reorganised away (its payment not mined again),
        // and B is paid.
        rpc.reorg(1).unwrap();
        let tb = rig.pay_eth(&ba, ETH / 2);
        rpc.mine(1).unwrap();
        assert!(
            rpc.receipt(&tc).unwrap().is_none(),
            "C's payment is off the chain"
        );

        let mut k = custody(&rig, &socket, &state);
        k.poll().unwrap();
        let (d, r) = k.last_stats("ETH").unwrap();
        let from = d.scanned_from.unwrap();
        assert!(
            from >= head - 1 && from <= head,
            "resumed at the cursor (rewound past the reorg), not at 0: {from}"
        );
        let rfrom = r.scanned_from.unwrap();
        assert!(rfrom > 100, "reconciliation resumed near its cursor: {rfrom}");
        for _ in 0..CONFIRMATIONS + 1 {
            rpc.mine(1).unwrap();
            k.poll().unwrap();
        }
        let st = rig.statuses(rig.eth);
        let id = |h: [u8; 32]| format!("0x{}", hex::encode(h));
        let status = |h| st.iter().find(|x| x.0 == id(h)).map(|x| x.2);
        assert_eq!(status(ta), Some(DepositStatus::Credited), "{st:?}");
        assert_eq!(
            status(tb),
            Some(DepositStatus::Credited),
            "found after the restart: {st:?}"
        );
        assert_eq!(
            status(tc),
            Some(DepositStatus::Dropped),
            "the reorg while down: {st:?}"
        );
        assert_eq!(st.len(), 3, "each once: {st:?}");
        assert_eq!(rig.customer(a, rig.eth), (ETH as i128, ETH));
        assert_eq!(rig.customer(b, rig.eth), (ETH as i128 / 2, ETH / 2));
        assert!(rig.link.view(|e| e.admin().incidents.is_empty()));
        signer.stop();
        rig.audit();
    }
}
