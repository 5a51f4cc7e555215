//! The wallet and API keys through `Engine::apply` only: deposit addresses and deposits,
//! whitelisted withdrawal addresses with a cooling period, withdrawals with their holds, API
//! keys, replay and snapshots, and a property test that random wallet traffic keeps every
//! invariant.
//!
//! The harness checks after every command that the engine audit passes, that every asset's
//! ledger is balanced, that the ledger agrees with the wallet's records exactly (every coin of
//! every account is explained by deposits and withdrawals), and that a refused command changed
//! nothing: its state hash equals that of a twin engine that applied a `Tick` instead.

use crate::{assert_replays_to, replay, restore_and_replay};
use kinko_core::asset::AssetSwitches;
use kinko_core::engine::{AddressAuth, Command, Engine, Event, Reply};
use kinko_core::identity::{
    Action, IdentityCommand, IdentityReply, Passkey, ProofFactor, SessionLevel, StepUp, Via,
};
use kinko_core::keys::{ApiKey, KeySecret, Permissions, KEYS_PER_USER_MAX};
use kinko_core::ledger::{Account, Owner, PendingState, SystemAccount, TransferKind, TransferRequest};
use kinko_core::money::{Amount, AssetCode, AssetId, TransferId, UserId};
use kinko_core::reject::Reject;
use kinko_core::wallet::{
    AddressId, CustodyMoveKind, CustodyMoveStatus, DepositId, DepositStatus, Withdrawal, WithdrawalAddress,
    WithdrawalId, WithdrawalStatus, ADDRESS_LEN_MAX, DEPOSIT_ADDRESSES_PER_ACCOUNT_MAX,
    TRANSFER_CODE_DEPOSIT, TRANSFER_CODE_WITHDRAWAL, TRANSFER_CODE_WITHDRAWAL_FEE,
    TRANSFER_CODE_WITHDRAWAL_SETTLE, WITHDRAWALS_OPEN_PER_USER_MAX,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const BTC: AssetId = AssetId(0);
pub(crate) const ETH: AssetId = AssetId(1);
/// 1 BTC in satoshi.
pub(crate) const COIN: u128 = 100_000_000;
pub(crate) const STEP_NS: u64 = 1_000_000;
pub(crate) const HOUR_NS: u64 = 3_600_000_000_000;
pub(crate) const DAY_NS: u64 = 24 * HOUR_NS;
/// The users `W::new` registers (ids 1 to 3, in order), each ready to withdraw.
pub(crate) const USERS: u64 = 3;
/// An argon2id PHC string: the engine checks the form only (the gateway checks passwords).
pub(crate) const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

pub(crate) struct W {
    pub(crate) engine: Engine,
    pub(crate) seq: u64,
    pub(crate) now_ns: u64,
    pub(crate) log: Vec<(u64, u64, Command)>,
    pub(crate) events: Vec<Event>,
    /// Step-up proofs made so far, per user: each proof's nonce and passkey counter.
    proofs: BTreeMap<u64, u32>,
}

/// The token hash of the full session `W::new` opens for `user`.
pub(crate) fn session_of(user: u64) -> [u8; 32] {
    let mut t = [0x5e; 32];
    t[..8].copy_from_slice(&user.to_be_bytes());
    t
}

/// The credential id of the passkey `W::new` enrols for `user`.
pub(crate) fn credential_of(user: u64) -> Vec<u8> {
    format!("passkey-of-{user}").into_bytes()
}

/// The hash of recovery code `i` (0 or 1) `W::new` issues to `user`.
pub(crate) fn recovery_of(user: u64, i: u8) -> [u8; 32] {
    let mut h = [0xec; 32];
    h[..8].copy_from_slice(&user.to_be_bytes());
    h[8] = i;
    h
}

/// What the gateway sends after checking a password against `password_hash`.
pub(crate) fn password_digest(password_hash: &str) -> [u8; 32] {
    *blake3::hash(password_hash.as_bytes()).as_bytes()
}

/// Opens a session after the gateway checked the password of `password_hash`.
pub(crate) fn open_session(
    user: u64,
    token_hash: [u8; 32],
    level: SessionLevel,
    expires_ns: u64,
    password_hash: &str,
) -> IdentityCommand {
    IdentityCommand::OpenSession {
        user: UserId(user),
        token_hash,
        level,
        expires_ns,
        device: "harness".into(),
        ip: "198.51.100.1".into(),
        password_hash_digest: password_digest(password_hash),
    }
}

/// A nonce no other proof of the harness uses.
fn proof_nonce(user: u64, n: u32) -> [u8; 16] {
    let mut nonce = [0; 16];
    nonce[..8].copy_from_slice(&user.to_be_bytes());
    nonce[8..12].copy_from_slice(&n.to_be_bytes());
    nonce
}

pub(crate) fn withdrawal(
    user: u64,
    address: AddressId,
    amount: u128,
    client_id: Option<u128>,
    via: Via,
    proof: StepUp,
) -> Command {
    Command::RequestWithdrawal {
        user: UserId(user),
        address,
        amount: Amount(amount),
        client_id,
        via,
        proof,
    }
}

impl W {
    /// BTC (asset 0) and ETH (asset 1), no users.
    pub(crate) fn empty() -> W {
        let mut w = W {
            engine: Engine::new(),
            seq: 0,
            now_ns: 1_700_000_000_000_000_000,
            log: Vec::new(),
            events: Vec::new(),
            proofs: BTreeMap::new(),
        };
        for (code, decimals) in [("BTC", 8), ("ETH", 18)] {
            w.ok(Command::DefineAsset {
                code: AssetCode::new(code).unwrap(),
                decimals,
            });
        }
        w
    }

    /// BTC and ETH, and users 1 to `USERS`, each with a full session and a passkey (their first
    /// factor, so no security lock) and two recovery codes.
    pub(crate) fn new() -> W {
        let mut w = W::empty();
        for user in 1..=USERS {
            w.ready_user(user);
        }
        w
    }

    /// Registers the next user (it must get id `user`), opens its full session `session_of`,
    /// then enrols its passkey `credential_of` and recovery codes `recovery_of`.
    pub(crate) fn ready_user(&mut self, user: u64) {
        let reply = self.ok(Command::Identity(IdentityCommand::Register {
            email: format!("user{user}@example.com"),
            password_hash: PASSWORD_HASH.into(),
        }));
        assert_eq!(reply, Reply::Identity(IdentityReply::Registered(UserId(user))));
        self.ok(Command::Identity(open_session(
            user,
            session_of(user),
            SessionLevel::Full,
            self.now_ns + 30 * DAY_NS,
            PASSWORD_HASH,
        )));
        self.ok(Command::Identity(IdentityCommand::EnrolPasskey {
            user: UserId(user),
            passkey: Passkey {
                credential_id: credential_of(user),
                public_key: vec![1; 65],
                sign_count: 0,
                label: "harness key".into(),
                created_ns: 0,
            },
            proof: None,
            recovery: vec![recovery_of(user, 0), recovery_of(user, 1)],
        }));
    }

    /// A proof by `factor` for `action`, issued at the next step, with a nonce never used.
    pub(crate) fn step_up(&mut self, user: u64, action: &Action, factor: ProofFactor) -> StepUp {
        let n = self.next_proof(user);
        StepUp {
            action: action.digest(),
            issued_ns: self.now_ns + STEP_NS,
            nonce: proof_nonce(user, n),
            factor,
        }
    }

    /// A proof by `user`'s passkey `credential_of(user)` for `action`, issued at `issued_ns`,
    /// its signature counter higher than any before.
    pub(crate) fn passkey_proof_at(&mut self, user: u64, action: &Action, issued_ns: u64) -> StepUp {
        self.passkey_proof_by(user, &credential_of(user), action, issued_ns)
    }

    /// The same with the passkey `credential`.
    pub(crate) fn passkey_proof_by(
        &mut self,
        user: u64,
        credential: &[u8],
        action: &Action,
        issued_ns: u64,
    ) -> StepUp {
        let n = self.next_proof(user);
        let mut authenticator_data = vec![0; 37];
        authenticator_data[33..37].copy_from_slice(&n.to_be_bytes());
        StepUp {
            action: action.digest(),
            issued_ns,
            nonce: proof_nonce(user, n),
            factor: ProofFactor::Passkey {
                credential_id: credential.to_vec(),
                authenticator_data,
                client_data_json: b"{}".to_vec(),
                signature: vec![1],
            },
        }
    }

    /// A passkey proof for `action`, issued at the next step (when `run` applies a command).
    pub(crate) fn passkey_proof(&mut self, user: u64, action: &Action) -> StepUp {
        self.passkey_proof_at(user, action, self.now_ns + STEP_NS)
    }

    fn next_proof(&mut self, user: u64) -> u32 {
        let n = self.proofs.entry(user).or_default();
        *n += 1;
        *n
    }

    /// The step-up action of a withdrawal as the engine sees it now; for an address the user
    /// cannot use (the engine refuses those before it looks at the proof), some other action.
    pub(crate) fn withdrawal_action(
        &self,
        user: u64,
        address: AddressId,
        amount: u128,
        client_id: Option<u128>,
    ) -> Action {
        self.engine
            .withdrawal_action(UserId(user), address, Amount(amount), client_id)
            .unwrap_or(Action::ChangePassword { user: UserId(user) })
    }

    /// A withdrawal request through `via` with a fresh passkey proof, to be applied at `ts`.
    pub(crate) fn withdraw_via(
        &mut self,
        user: u64,
        address: AddressId,
        amount: u128,
        client_id: Option<u128>,
        via: Via,
        ts: u64,
    ) -> Command {
        let action = self.withdrawal_action(user, address, amount, client_id);
        let proof = self.passkey_proof_at(user, &action, ts);
        withdrawal(user, address, amount, client_id, via, proof)
    }

    /// The same through `user`'s full session.
    pub(crate) fn withdraw_at(
        &mut self,
        user: u64,
        address: AddressId,
        amount: u128,
        client_id: Option<u128>,
        ts: u64,
    ) -> Command {
        self.withdraw_via(
            user,
            address,
            amount,
            client_id,
            Via::Session(session_of(user)),
            ts,
        )
    }

    /// The same, to be applied at the next step (by `run`).
    pub(crate) fn withdraw(
        &mut self,
        user: u64,
        address: AddressId,
        amount: u128,
        client_id: Option<u128>,
    ) -> Command {
        self.withdraw_at(user, address, amount, client_id, self.now_ns + STEP_NS)
    }

    /// `CreateApiKey`, with a passkey proof of the key's user when the key may withdraw.
    pub(crate) fn create_key(&mut self, key: ApiKey) -> Command {
        let proof = key.permissions.withdraw.then(|| {
            let action = Action::CreateWithdrawKey {
                user: key.user,
                label: key.label.clone(),
                ip_allowlist: key.ip_allowlist.clone(),
            };
            self.passkey_proof(key.user.0, &action)
        });
        Command::CreateApiKey { key, proof }
    }

    /// Applies `cmd` at the next step.
    pub(crate) fn run(&mut self, cmd: Command) -> Result<Reply, Reject> {
        let ts = self.now_ns + STEP_NS;
        self.run_at(ts, cmd)
    }

    /// Applies `cmd` at `ts`, then checks everything the harness promises (see the module doc).
    pub(crate) fn run_at(&mut self, ts: u64, cmd: Command) -> Result<Reply, Reject> {
        assert!(ts >= self.now_ns, "harness: time went back");
        self.seq += 1;
        self.now_ns = ts;
        let mut twin = self.engine.clone();
        twin.apply(self.seq, ts, &Command::Tick, &mut Vec::new())
            .expect("a tick is always accepted");
        self.events.clear();
        let r = self.engine.apply(self.seq, ts, &cmd, &mut self.events);
        if let Err(v) = self.engine.check() {
            panic!("invariant broken after seq {} ({cmd:?}): {v}", self.seq);
        }
        balanced(&self.engine);
        reconcile(&self.engine);
        if let Err(reject) = &r {
            assert_eq!(
                self.engine.state_hash(),
                twin.state_hash(),
                "{cmd:?} was refused with {reject:?} but changed the state"
            );
            assert!(
                !self
                    .events
                    .iter()
                    .any(|ev| matches!(ev, Event::Wallet(_) | Event::Key(_) | Event::Identity(_))),
                "{cmd:?} was refused but emitted {:?}",
                self.events
            );
        }
        self.log.push((self.seq, ts, cmd));
        r
    }

    pub(crate) fn ok(&mut self, cmd: Command) -> Reply {
        let c = format!("{cmd:?}");
        self.run(cmd).unwrap_or_else(|e| panic!("{c}: {e:?}"))
    }

    /// A refusal with exactly `want` (the harness proves it changed nothing).
    pub(crate) fn refused(&mut self, cmd: Command, want: Reject) {
        let c = format!("{cmd:?}");
        assert_eq!(self.run(cmd), Err(want), "{c}");
    }

    /// An accepted repeat that must change nothing (idempotency): same state as a `Tick`.
    pub(crate) fn noop(&mut self, cmd: Command) -> Reply {
        let mut twin = self.engine.clone();
        twin.apply(
            self.seq + 1,
            self.now_ns + STEP_NS,
            &Command::Tick,
            &mut Vec::new(),
        )
        .unwrap();
        let c = format!("{cmd:?}");
        let r = self.ok(cmd);
        assert_eq!(
            self.engine.state_hash(),
            twin.state_hash(),
            "{c} changed the state"
        );
        assert!(
            !self.events.iter().any(|e| !matches!(e, Event::Ledger(_))),
            "{c} emitted {:?}",
            self.events
        );
        r
    }

    pub(crate) fn customer(&self, user: u64, asset: AssetId) -> Option<Account> {
        let l = self.engine.ledger();
        l.customer_account(UserId(user), asset)
            .and_then(|a| l.account(a))
            .copied()
    }

    /// (balance, held, available) of a user's account; zeros if it has none.
    pub(crate) fn bal(&self, user: u64, asset: AssetId) -> (i128, u128, u128) {
        self.customer(user, asset)
            .map_or((0, 0, 0), |a| (a.balance(), a.held, a.available()))
    }

    pub(crate) fn sys(&self, asset: AssetId, which: SystemAccount) -> i128 {
        let id = self.engine.asset(asset).unwrap().system_account(which);
        self.engine.ledger().account(id).unwrap().balance()
    }

    pub(crate) fn assign(&mut self, user: u64, asset: AssetId, address: &str) -> Result<Reply, Reject> {
        self.run(Command::AssignDepositAddress {
            user: UserId(user),
            asset,
            address: address.into(),
        })
    }

    pub(crate) fn seen(
        &mut self,
        asset: AssetId,
        address: &str,
        txid: &str,
        vout: u32,
        amount: u128,
    ) -> Result<DepositId, Reject> {
        self.run(Command::DepositSeen {
            asset,
            address: address.into(),
            txid: txid.into(),
            vout,
            amount: Amount(amount),
        })
        .map(|r| match r {
            Reply::Deposit(id) => id,
            other => panic!("{other:?}"),
        })
    }

    /// Gives `user` a fresh deposit address and credits `amount` through it.
    pub(crate) fn fund(&mut self, user: u64, asset: AssetId, amount: u128) {
        let address = format!("dep-{user}-{asset}");
        self.assign(user, asset, &address).unwrap();
        let txid = format!("fund-{}", self.seq);
        let id = self.seen(asset, &address, &txid, 0, amount).unwrap();
        self.ok(Command::DepositConfirmed { deposit: id });
    }

    pub(crate) fn add_address(
        &mut self,
        user: u64,
        asset: AssetId,
        address: &str,
        cooling_ns: u64,
    ) -> WithdrawalAddress {
        match self.ok(Command::AddWithdrawalAddress {
            user: UserId(user),
            asset,
            address: address.into(),
            label: "my wallet".into(),
            cooling_ns,
            by: operator(),
        }) {
            Reply::WithdrawalAddress(a) => a,
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn request(
        &mut self,
        user: u64,
        address: AddressId,
        amount: u128,
        client_id: Option<u128>,
    ) -> Result<Withdrawal, Reject> {
        let cmd = self.withdraw(user, address, amount, client_id);
        self.run(cmd).map(|r| match r {
            Reply::Withdrawal(w) => w,
            other => panic!("{other:?}"),
        })
    }

    pub(crate) fn withdrawal_reply(&mut self, cmd: Command) -> Withdrawal {
        match self.ok(cmd) {
            Reply::Withdrawal(w) => w,
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn status(&self, id: WithdrawalId) -> WithdrawalStatus {
        self.engine.wallet().withdrawal(id).unwrap().status
    }

    pub(crate) fn switches(&mut self, asset: AssetId, deposits: bool, withdrawals: bool) {
        self.ok(Command::SetAssetSwitches {
            asset,
            switches: AssetSwitches {
                deposits,
                withdrawals,
                trading: true,
            },
        });
    }

    pub(crate) fn wallet_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Wallet(_)))
            .count()
    }
}

/// An operator whitelisting an address (for tests that are not about who may).
pub(crate) fn operator() -> AddressAuth {
    AddressAuth::Operator {
        name: "test".into(),
        reason: "setup".into(),
    }
}

/// Every asset's debits equal its credits; no customer is negative or holds more than it has.
fn balanced(engine: &Engine) {
    let mut sums = std::collections::BTreeMap::<AssetId, (u128, u128)>::new();
    for a in engine.ledger().accounts() {
        let s = sums.entry(a.asset).or_default();
        s.0 += a.debits;
        s.1 += a.credits;
        if let Owner::Customer(u) = a.owner {
            assert!(a.balance() >= 0, "customer {u:?} is negative: {a:?}");
            assert!(
                a.held <= a.balance() as u128,
                "customer {u:?} holds more than it has: {a:?}"
            );
        }
    }
    for (asset, (d, c)) in sums {
        assert_eq!(d, c, "asset {asset} unbalanced");
    }
}

/// The ledger is explained by the wallet's records alone (this file moves money only through
/// the wallet, and restitution plans two admins executed, which pay customers out of company
/// funds): per customer, balance = credited deposits − (amount + fee) of withdrawals that
/// left + restitution received, held = (amount + fee) of requested ones; the hot wallet holds credited deposits minus
/// completed withdrawals, withdrawals in flight the broadcast amounts, fee revenue the fees of
/// withdrawals that left. So custody always covers customers plus fees plus what is in flight.
fn reconcile(engine: &Engine) {
    let wallet = engine.wallet();
    for (i, _) in engine.assets().iter().enumerate() {
        let asset = AssetId(i as u32);
        let users: BTreeSet<UserId> = engine
            .ledger()
            .accounts()
            .iter()
            .filter(|a| a.asset == asset)
            .filter_map(|a| match a.owner {
                Owner::Customer(u) => Some(u),
                Owner::System(_) => None,
            })
            .collect();
        let deposits = wallet.deposits().iter().filter(|d| d.asset == asset);
        // What executed restitution plans paid in this asset (to `user`, or to everyone).
        let restituted = |user: Option<UserId>| -> u128 {
            engine
                .admin()
                .proposals
                .iter()
                .filter(|p| p.status == kinko_core::admin::ProposalStatus::Executed)
                .filter_map(|p| match &p.change {
                    kinko_core::admin::AdminChange::Restitution(plan) if plan.pay_asset == asset => {
                        Some(plan)
                    }
                    _ => None,
                })
                .flat_map(|plan| plan.lines.iter())
                .filter(|l| user.is_none_or(|u| l.user == u))
                .map(|l| l.pay.0)
                .sum()
        };
        let withdrawals: Vec<&Withdrawal> =
            wallet.withdrawals().iter().filter(|w| w.asset == asset).collect();
        // A withdrawal whose transaction is recorded has left the customer; a reverted one
        // came back (its fee from fee revenue, or what revenue lacked from suspense).
        let left = |w: &Withdrawal| w.status.has_tx();
        let mut customers = 0i128;
        for u in &users {
            let a = engine
                .ledger()
                .account(engine.ledger().customer_account(*u, asset).unwrap())
                .unwrap();
            // Seen deposits are credited at once (and held until confirmed); a reversed one
            // was debited what was available, so it still counts for its shortfall.
            let credited: u128 = deposits
                .clone()
                .filter(|d| d.user == *u)
                .map(|d| match d.status {
                    DepositStatus::Pending | DepositStatus::Credited => d.amount.0,
                    DepositStatus::Reversed => d.shortfall.0,
                    DepositStatus::Dropped => 0,
                })
                .sum();
            let gone: u128 = withdrawals
                .iter()
                .filter(|w| w.user == *u)
                .filter(|w| left(w))
                .map(|w| w.amount.0 + w.fee.0)
                .sum();
            let held: u128 = withdrawals
                .iter()
                .filter(|w| w.user == *u && w.status.is_held())
                .map(|w| w.amount.0 + w.fee.0)
                .sum::<u128>()
                + deposits
                    .clone()
                    .filter(|d| d.user == *u && d.status == DepositStatus::Pending)
                    .map(|d| d.amount.0)
                    .sum::<u128>();
            assert_eq!(
                a.balance(),
                (credited + restituted(Some(*u)) - gone) as i128,
                "balance of {u:?} in asset {asset}"
            );
            assert_eq!(a.held, held, "held of {u:?} in asset {asset}");
            customers += a.balance();
        }
        let balance = |which: SystemAccount| {
            let id = engine.assets()[i].system_account(which);
            engine.ledger().account(id).unwrap().balance()
        };
        let confirmed: u128 = deposits
            .clone()
            .filter(|d| matches!(d.status, DepositStatus::Credited | DepositStatus::Reversed))
            .map(|d| d.amount.0)
            .sum();
        let pending: u128 = deposits
            .clone()
            .filter(|d| d.status == DepositStatus::Pending)
            .map(|d| d.amount.0)
            .sum();
        let withdrawal_shortfall: u128 = withdrawals.iter().map(|w| w.shortfall.0).sum();
        let shortfall: u128 = deposits.clone().map(|d| d.shortfall.0).sum::<u128>() + withdrawal_shortfall;
        // A reversed deposit was confirmed (into hot), then taken out of hot again.
        let deposits_reversed: u128 = deposits
            .clone()
            .filter(|d| d.status == DepositStatus::Reversed)
            .map(|d| d.amount.0 - d.reversed_from_cold.0)
            .sum();
        let reversed_from_cold: u128 = deposits.map(|d| d.reversed_from_cold.0).sum();
        let completed: u128 = withdrawals
            .iter()
            .filter(|w| w.status == WithdrawalStatus::Completed)
            .map(|w| w.amount.0)
            .sum();
        let in_flight: u128 = withdrawals
            .iter()
            .filter(|w| matches!(w.status, WithdrawalStatus::Signed | WithdrawalStatus::Broadcast))
            .map(|w| w.amount.0)
            .sum();
        // A reverted move went back except its shortfall (an earlier reversal took that part
        // from the receiving wallet already); its fee came back.
        let moves = |kind: CustodyMoveKind| {
            let m = wallet
                .custody_moves()
                .iter()
                .filter(move |m| m.asset == asset && m.kind == kind);
            let reverted = |m: &&kinko_core::wallet::CustodyMove| m.status == CustodyMoveStatus::Reverted;
            (
                m.clone()
                    .map(|m| if reverted(&m) { m.shortfall.0 } else { m.amount.0 })
                    .sum::<u128>(),
                m.filter(|m| !reverted(m)).map(|m| m.network_fee.0).sum::<u128>(),
            )
        };
        let (swept, sweep_fees) = moves(CustodyMoveKind::Sweep);
        let (refilled, refill_fees) = moves(CustodyMoveKind::Refill);
        let network_fees: u128 = withdrawals
            .iter()
            .filter(|w| left(w))
            .map(|w| w.network_fee.0)
            .sum::<u128>()
            + sweep_fees
            + refill_fees;
        let fees: u128 = withdrawals
            .iter()
            .filter(|w| left(w))
            .map(|w| w.fee.0)
            .sum::<u128>()
            + withdrawal_shortfall;
        // Gas booked per transaction (`RecordGas`): network fees ← hot wallet.
        let gas: u128 = engine
            .ledger()
            .transfers()
            .iter()
            .filter(|t| t.asset == asset && t.request.code == kinko_core::wallet::TRANSFER_CODE_GAS)
            .map(|t| t.amount.0)
            .sum();
        let network_fees = network_fees + gas;
        let hot = balance(SystemAccount::HotWallet);
        let withdrawal_fees = network_fees - sweep_fees - refill_fees - gas;
        let treasury_in: u128 = wallet
            .company_deposits()
            .iter()
            .filter(|d| d.asset == asset)
            .map(|d| d.amount.0)
            .sum();
        assert_eq!(
            hot,
            (confirmed + refilled + treasury_in) as i128
                - (completed + withdrawal_fees + swept + sweep_fees + gas) as i128
                - deposits_reversed as i128,
            "hot wallet of asset {asset}"
        );
        let cold = balance(SystemAccount::ColdWallet);
        assert_eq!(
            cold,
            swept as i128 - (refilled + refill_fees + reversed_from_cold) as i128,
            "cold wallet of asset {asset}"
        );
        assert_eq!(balance(SystemAccount::DepositsInFlight), pending as i128);
        assert_eq!(balance(SystemAccount::Suspense), -(shortfall as i128));
        assert_eq!(balance(SystemAccount::WithdrawalsInFlight), in_flight as i128);
        // Every miner fee is charged once: to company funds (fee revenue, then the treasury)
        // as far as they went when it was booked, the rest to network fees (paid with
        // customers' coins). None of the three ever goes below zero.
        // Restitution and the insurance fund (funded from the treasury) are company funds too.
        let paid_out = restituted(None);
        let (revenue, treasury, uncovered) = (
            balance(SystemAccount::FeeRevenue),
            balance(SystemAccount::CompanyTreasury)
                + balance(SystemAccount::InsuranceFund)
                + paid_out as i128,
            balance(SystemAccount::NetworkFees),
        );
        assert!(revenue >= 0 && treasury >= 0 && uncovered >= 0, "asset {asset}");
        assert!(
            revenue <= fees as i128 && treasury <= treasury_in as i128,
            "asset {asset}"
        );
        assert_eq!(
            uncovered + (fees as i128 - revenue) + (treasury_in as i128 - treasury),
            network_fees as i128,
            "miner fees of asset {asset}"
        );
        // Custody (and the miner fees paid out of it) covers every liability.
        assert_eq!(
            hot + cold + pending as i128 + network_fees as i128,
            customers + in_flight as i128 + fees as i128 - shortfall as i128 + treasury_in as i128
                - paid_out as i128,
            "custody of asset {asset}"
        );
    }
}

// --- deposits -------------------------------------------------------------------------------

#[test]
fn deposit_addresses_are_assigned_once_and_validated() {
    let mut w = W::new();
    assert_eq!(
        w.assign(1, BTC, "bc1qalice"),
        Ok(Reply::DepositAddress {
            address: "bc1qalice".into()
        })
    );
    assert_eq!(w.wallet_events(), 1);
    // The same address for the same user again: accepted, nothing new.
    w.noop(Command::AssignDepositAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qalice".into(),
    });
    assert_eq!(w.engine.wallet().deposit_addresses(UserId(1), BTC).len(), 1);
    assert_eq!(
        w.engine.wallet().deposit_address_owner(BTC, "bc1qalice"),
        Some(UserId(1))
    );
    // Assigning an address opens the customer's account (a deposit has somewhere to go).
    assert_eq!(w.bal(1, BTC), (0, 0, 0));
    assert!(w.customer(1, BTC).is_some());

    let long = "a".repeat(ADDRESS_LEN_MAX + 1);
    let max = "b".repeat(ADDRESS_LEN_MAX);
    let cases: Vec<(&str, u64, AssetId, &str, Reject)> = vec![
        (
            "another user's address",
            2,
            BTC,
            "bc1qalice",
            Reject::AddressTaken,
        ),
        ("empty", 2, BTC, "", Reject::AddressInvalid),
        ("only spaces", 2, BTC, "   ", Reject::AddressInvalid),
        ("leading space", 2, BTC, " bc1qbob", Reject::AddressInvalid),
        ("inner space", 2, BTC, "bc1q bob", Reject::AddressInvalid),
        ("newline", 2, BTC, "bc1qbob\n", Reject::AddressInvalid),
        ("not ascii", 2, BTC, "bc1qbøb", Reject::AddressInvalid),
        ("too long", 2, BTC, &long, Reject::AddressInvalid),
        ("unknown asset", 2, AssetId(7), "bc1qbob", Reject::AssetNotFound),
    ];
    for (name, user, asset, address, want) in cases {
        assert_eq!(w.assign(user, asset, address), Err(want), "{name}");
    }
    // The longest valid address; the same string on another asset is another address.
    w.assign(2, BTC, &max).unwrap();
    w.assign(2, ETH, "bc1qalice").unwrap();
    assert_eq!(
        w.engine.wallet().deposit_address_owner(ETH, "bc1qalice"),
        Some(UserId(2))
    );
    // A user may have several addresses per asset.
    w.assign(1, BTC, "bc1qalice2").unwrap();
    assert_eq!(w.engine.wallet().deposit_addresses(UserId(1), BTC).len(), 2);

    // Deposits switched off: no new address (checked before the address itself).
    w.switches(BTC, false, true);
    w.refused(
        Command::AssignDepositAddress {
            user: UserId(3),
            asset: BTC,
            address: "bc1qcarol".into(),
        },
        Reject::DepositsDisabled,
    );
    w.refused(
        Command::AssignDepositAddress {
            user: UserId(3),
            asset: BTC,
            address: String::new(),
        },
        Reject::DepositsDisabled,
    );
    // Other assets are not affected; switched back on, the address is given.
    w.assign(3, ETH, "0xcarol").unwrap();
    w.switches(BTC, true, true);
    w.assign(3, BTC, "bc1qcarol").unwrap();
    assert_eq!(
        w.engine.wallet().deposit_address_owner(BTC, "bc1qcarol"),
        Some(UserId(3))
    );
}

#[test]
fn deposits_credit_exactly_once_when_confirmed() {
    let mut w = W::new();
    w.assign(1, BTC, "bc1qalice").unwrap();
    w.assign(1, BTC, "bc1qalice2").unwrap();

    let refusals: Vec<(&str, Command, Reject)> = vec![
        (
            "unknown address",
            seen_cmd(BTC, "bc1qnobody", "tx1", 0, COIN),
            Reject::AddressUnknown,
        ),
        (
            "address of another asset",
            seen_cmd(ETH, "bc1qalice", "tx1", 0, COIN),
            Reject::AddressUnknown,
        ),
        (
            "unknown asset",
            seen_cmd(AssetId(9), "bc1qalice", "tx1", 0, COIN),
            Reject::AssetNotFound,
        ),
        (
            "empty txid",
            seen_cmd(BTC, "bc1qalice", "", 0, COIN),
            Reject::TxidInvalid,
        ),
        (
            "txid with a space",
            seen_cmd(BTC, "bc1qalice", "tx 1", 0, COIN),
            Reject::TxidInvalid,
        ),
        (
            "txid too long",
            seen_cmd(BTC, "bc1qalice", &"f".repeat(129), 0, COIN),
            Reject::TxidInvalid,
        ),
        (
            "zero amount",
            seen_cmd(BTC, "bc1qalice", "tx1", 0, 0),
            Reject::AmountZero,
        ),
        (
            "confirm unknown",
            Command::DepositConfirmed {
                deposit: DepositId(1),
            },
            Reject::DepositNotFound,
        ),
        (
            "confirm id 0",
            Command::DepositConfirmed {
                deposit: DepositId(0),
            },
            Reject::DepositNotFound,
        ),
        (
            "drop id 0",
            Command::DepositDropped {
                deposit: DepositId(0),
            },
            Reject::DepositNotFound,
        ),
        (
            "drop unknown",
            Command::DepositDropped {
                deposit: DepositId(u64::MAX),
            },
            Reject::DepositNotFound,
        ),
    ];
    for (name, cmd, want) in refusals {
        assert_eq!(w.run(cmd), Err(want), "{name}");
    }

    // Seen: recorded as pending; shown on the customer's account but held (not spendable),
    // against deposits in flight.
    let d1 = w.seen(BTC, "bc1qalice", "tx1", 0, 2 * COIN).unwrap();
    assert_eq!(d1, DepositId(1));
    let rec = w.engine.wallet().deposit(d1).unwrap().clone();
    assert_eq!(
        (rec.user, rec.status, rec.amount, rec.seen_ns),
        (UserId(1), DepositStatus::Pending, Amount(2 * COIN), w.now_ns)
    );
    assert_eq!(w.bal(1, BTC), (2 * COIN as i128, 2 * COIN, 0));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 0);
    assert_eq!(w.sys(BTC, SystemAccount::DepositsInFlight), 2 * COIN as i128);
    assert_eq!(w.engine.wallet().deposit_by_output(BTC, "tx1", 0), Some(d1));

    // Seen again: the same deposit, nothing new.
    assert_eq!(
        w.noop(seen_cmd(BTC, "bc1qalice", "tx1", 0, 2 * COIN)),
        Reply::Deposit(d1)
    );
    assert_eq!(w.engine.wallet().deposits().len(), 1);
    // The same output with another amount or to another address is a conflict.
    w.refused(
        seen_cmd(BTC, "bc1qalice", "tx1", 0, 2 * COIN + 1),
        Reject::DepositConflict,
    );
    w.refused(
        seen_cmd(BTC, "bc1qalice2", "tx1", 0, 2 * COIN),
        Reject::DepositConflict,
    );
    // Another output of the same transaction is another deposit.
    let d2 = w.seen(BTC, "bc1qalice2", "tx1", 1, COIN / 2).unwrap();
    assert_eq!(d2, DepositId(2));
    let pending = (2 * COIN + COIN / 2) as i128;
    assert_eq!(w.bal(1, BTC), (pending, pending as u128, 0));

    // Confirmed: exactly the amount becomes available; the coins count as hot wallet.
    assert_eq!(
        w.ok(Command::DepositConfirmed { deposit: d1 }),
        Reply::Deposit(d1)
    );
    assert_eq!(w.bal(1, BTC), (pending, COIN / 2, 2 * COIN));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 2 * COIN as i128);
    assert_eq!(w.sys(BTC, SystemAccount::DepositsInFlight), (COIN / 2) as i128);
    let rec = w.engine.wallet().deposit(d1).unwrap();
    assert_eq!((rec.status, rec.updated_ns), (DepositStatus::Credited, w.now_ns));
    // Confirmed twice: no double credit.
    w.noop(Command::DepositConfirmed { deposit: d1 });
    assert_eq!(w.bal(1, BTC).2, 2 * COIN);
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 2 * COIN as i128);
    // A repeat of the chain report after crediting still answers the same deposit.
    assert_eq!(
        w.noop(seen_cmd(BTC, "bc1qalice", "tx1", 0, 2 * COIN)),
        Reply::Deposit(d1)
    );
    // A credited deposit cannot be dropped.
    w.refused(
        Command::DepositDropped { deposit: d1 },
        Reject::DepositStateInvalid,
    );

    // Dropped (reorg): never credited; dropping again is a no-op; confirming is refused.
    w.ok(Command::DepositDropped { deposit: d2 });
    assert_eq!(
        w.engine.wallet().deposit(d2).unwrap().status,
        DepositStatus::Dropped
    );
    w.noop(Command::DepositDropped { deposit: d2 });
    w.refused(
        Command::DepositConfirmed { deposit: d2 },
        Reject::DepositStateInvalid,
    );
    assert_eq!(w.bal(1, BTC), (2 * COIN as i128, 0, 2 * COIN));
    assert_eq!(w.sys(BTC, SystemAccount::DepositsInFlight), 0);
}

fn seen_cmd(asset: AssetId, address: &str, txid: &str, vout: u32, amount: u128) -> Command {
    Command::DepositSeen {
        asset,
        address: address.into(),
        txid: txid.into(),
        vout,
        amount: Amount(amount),
    }
}

// --- withdrawal addresses and requests ------------------------------------------------------

#[test]
fn withdrawal_addresses_are_validated_and_owned() {
    let mut w = W::new();
    let a = w.add_address(1, BTC, "bc1qcold", DAY_NS);
    assert_eq!(a.id, AddressId(1));
    assert_eq!(a.usable_at_ns, w.now_ns + DAY_NS);
    // The same address again: the existing entry (its cooling does not restart).
    let again = w.noop(Command::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qcold".into(),
        label: "other label".into(),
        cooling_ns: 0,
        by: operator(),
    });
    assert_eq!(again, Reply::WithdrawalAddress(a.clone()));

    let add = |user: u64, asset: AssetId, address: &str, label: &str, cooling_ns: u64| {
        Command::AddWithdrawalAddress {
            user: UserId(user),
            asset,
            address: address.into(),
            label: label.into(),
            cooling_ns,
            by: operator(),
        }
    };
    let cases: Vec<(&str, Command, Reject)> = vec![
        ("empty address", add(1, BTC, "", "x", 0), Reject::AddressInvalid),
        ("space address", add(1, BTC, "  ", "x", 0), Reject::AddressInvalid),
        (
            "long address",
            add(1, BTC, &"z".repeat(ADDRESS_LEN_MAX + 1), "x", 0),
            Reject::AddressInvalid,
        ),
        (
            "control in label",
            add(1, BTC, "bc1qx", "a\tb", 0),
            Reject::LabelInvalid,
        ),
        (
            "long label",
            add(1, BTC, "bc1qx", &"l".repeat(65), 0),
            Reject::LabelInvalid,
        ),
        (
            "unknown asset",
            add(1, AssetId(5), "bc1qx", "x", 0),
            Reject::AssetNotFound,
        ),
        (
            "cooling overflows",
            add(1, BTC, "bc1qx", "x", u64::MAX),
            Reject::LimitExceeded,
        ),
        (
            "remove another user's",
            Command::RemoveWithdrawalAddress {
                user: UserId(2),
                id: a.id,
            },
            Reject::WithdrawalAddressNotFound,
        ),
        (
            "remove unknown",
            Command::RemoveWithdrawalAddress {
                user: UserId(1),
                id: AddressId(0),
            },
            Reject::WithdrawalAddressNotFound,
        ),
    ];
    for (name, cmd, want) in cases {
        assert_eq!(w.run(cmd), Err(want), "{name}");
    }
    // An empty label is fine; another user may whitelist the same address for themselves.
    let b = w.add_address(2, BTC, "bc1qcold", 0);
    assert_eq!(b.id, AddressId(2));
    w.ok(Command::RemoveWithdrawalAddress {
        user: UserId(1),
        id: a.id,
    });
    assert!(w.engine.wallet().withdrawal_addresses_of(UserId(1)).is_empty());
    assert_eq!(w.engine.wallet().withdrawal_addresses_of(UserId(2)), vec![&b]);
    w.refused(
        Command::RemoveWithdrawalAddress {
            user: UserId(1),
            id: a.id,
        },
        Reject::WithdrawalAddressNotFound,
    );
    // Added again after removal: a new entry with a new cooling period.
    let c = w.add_address(1, BTC, "bc1qcold", DAY_NS);
    assert_eq!(c.id, AddressId(3));
    assert_eq!(c.usable_at_ns, w.now_ns + DAY_NS);
}

/// Alice (user 1) has 10 BTC and a whitelisted address that finished cooling; the fee is set.
pub(crate) fn alice_can_withdraw(fee: u128) -> (W, AddressId) {
    let mut w = W::new();
    w.fund(1, BTC, 10 * COIN);
    w.ok(Command::SetWithdrawalFee {
        asset: BTC,
        fee: Amount(fee),
    });
    assert_eq!(w.engine.wallet().withdrawal_fee(BTC), Amount(fee));
    let a = w.add_address(1, BTC, "bc1qalice-out", DAY_NS);
    w.now_ns = a.usable_at_ns;
    (w, a.id)
}

#[test]
fn cooling_period_gates_the_first_withdrawal() {
    let mut w = W::new();
    w.fund(1, BTC, 10 * COIN);
    let a = w.add_address(1, BTC, "bc1qalice-out", DAY_NS);
    // Right after adding it, and one nanosecond before it is usable.
    let req = w.withdraw(1, a.id, COIN, None);
    w.refused(req, Reject::WithdrawalAddressCooling);
    // Cooling is checked before the amount and the funds.
    let req = w.withdraw(1, a.id, 1_000 * COIN, None);
    w.refused(req, Reject::WithdrawalAddressCooling);
    let req = w.withdraw_at(1, a.id, COIN, None, a.usable_at_ns - 1);
    assert_eq!(
        w.run_at(a.usable_at_ns - 1, req),
        Err(Reject::WithdrawalAddressCooling)
    );
    // From `usable_at_ns` on, it is accepted.
    let req = w.withdraw_at(1, a.id, COIN, None, a.usable_at_ns);
    let r = w.run_at(a.usable_at_ns, req).unwrap();
    match r {
        Reply::Withdrawal(x) => assert_eq!(x.status, WithdrawalStatus::Requested),
        other => panic!("{other:?}"),
    }
    // An address added with no cooling is usable at once.
    let b = w.add_address(1, BTC, "bc1qinstant", 0);
    w.request(1, b.id, COIN, None).unwrap();
    assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 2 * COIN, 8 * COIN));
}

#[test]
fn a_withdrawal_holds_then_debits_then_leaves_custody() {
    let fee = 50_000;
    let (mut w, addr) = alice_can_withdraw(fee);
    let before = w.bal(1, BTC);
    assert_eq!(before, (10 * COIN as i128, 0, 10 * COIN));

    // Requested: amount + fee held; balance unchanged; nothing moved yet.
    let x = w.request(1, addr, 3 * COIN, None).unwrap();
    assert_eq!(x.id, WithdrawalId(1));
    assert_eq!(
        (x.status, x.amount, x.fee, x.user, x.address.as_str()),
        (
            WithdrawalStatus::Requested,
            Amount(3 * COIN),
            Amount(fee),
            UserId(1),
            "bc1qalice-out"
        )
    );
    assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 3 * COIN + fee, 7 * COIN - fee));
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 0);
    assert_eq!(w.sys(BTC, SystemAccount::WithdrawalsInFlight), 0);
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 10 * COIN as i128);

    // Before broadcast it cannot be confirmed; a broadcast needs a txid.
    w.refused(
        Command::WithdrawalConfirmed { id: x.id },
        Reject::WithdrawalStateInvalid,
    );
    let long = "a".repeat(129);
    for txid in ["", " ", &long] {
        w.refused(
            Command::WithdrawalBroadcast {
                id: x.id,
                txid: txid.into(),
                network_fee: Amount(0),
            },
            Reject::TxidInvalid,
        );
    }
    w.refused(
        Command::WithdrawalBroadcast {
            id: WithdrawalId(2),
            txid: "txout".into(),
            network_fee: Amount(0),
        },
        Reject::WithdrawalNotFound,
    );

    // Broadcast: the customer is debited amount + fee; the fee is revenue; the amount is in
    // flight; custody unchanged until the chain confirms.
    w.ok(Command::WithdrawalSigning { id: x.id });
    let b = w.withdrawal_reply(Command::WithdrawalBroadcast {
        id: x.id,
        txid: "txout".into(),
        network_fee: Amount(0),
    });
    assert_eq!(
        (b.status, b.txid.as_deref()),
        (WithdrawalStatus::Broadcast, Some("txout"))
    );
    let left = (10 * COIN - 3 * COIN - fee) as i128;
    assert_eq!(w.bal(1, BTC), (left, 0, left as u128));
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), fee as i128);
    assert_eq!(w.sys(BTC, SystemAccount::WithdrawalsInFlight), 3 * COIN as i128);
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 10 * COIN as i128);

    // Too late to cancel, fail or broadcast again.
    w.refused(
        Command::CancelWithdrawal {
            user: UserId(1),
            id: x.id,
        },
        Reject::WithdrawalStateInvalid,
    );
    w.refused(
        Command::FailWithdrawal {
            id: x.id,
            reason: "signer".into(),
        },
        Reject::WithdrawalStateInvalid,
    );
    w.refused(
        Command::WithdrawalBroadcast {
            id: x.id,
            txid: "txout2".into(),
            network_fee: Amount(0),
        },
        Reject::WithdrawalTxConflict,
    );

    // Confirmed: the coins left custody.
    let c = w.withdrawal_reply(Command::WithdrawalConfirmed { id: x.id });
    assert_eq!(
        (c.status, c.txid.as_deref()),
        (WithdrawalStatus::Completed, Some("txout"))
    );
    assert_eq!(w.sys(BTC, SystemAccount::WithdrawalsInFlight), 0);
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 7 * COIN as i128);
    assert_eq!(w.bal(1, BTC), (left, 0, left as u128));
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), fee as i128);
    w.refused(
        Command::WithdrawalConfirmed { id: x.id },
        Reject::WithdrawalStateInvalid,
    );
    w.refused(
        Command::CancelWithdrawal {
            user: UserId(1),
            id: x.id,
        },
        Reject::WithdrawalStateInvalid,
    );
}

#[test]
fn refused_withdrawals_change_nothing() {
    let fee = 1_000;
    let (mut w, addr) = alice_can_withdraw(fee);
    // Bob (user 2) has his own address and 1 BTC; Carol (3) an address and no account;
    // Alice an ETH address but no ETH.
    w.fund(2, BTC, COIN);
    let bob_addr = w.add_address(2, BTC, "bc1qbob-out", 0).id;
    let carol_addr = w.add_address(3, BTC, "bc1qcarol-out", 0).id;
    assert!(w.customer(3, BTC).is_none());
    let alice_eth = w.add_address(1, ETH, "0xalice", 0).id;
    let removed = w.add_address(1, BTC, "bc1qold", 0).id;
    w.ok(Command::RemoveWithdrawalAddress {
        user: UserId(1),
        id: removed,
    });
    let all = 10 * COIN;
    // (name, user, address, amount, reject); each request carries a valid proof.
    let cases: Vec<(&str, u64, AddressId, u128, Reject)> = vec![
        (
            "amount above balance",
            1,
            addr,
            all + 1,
            Reject::FundsInsufficient,
        ),
        // The amount alone fits; with the fee it does not (the linked fee hold fails and the
        // amount hold is rolled back).
        (
            "fee does not fit",
            1,
            addr,
            all - fee + 1,
            Reject::FundsInsufficient,
        ),
        ("all of it plus fee", 1, addr, all, Reject::FundsInsufficient),
        ("no account", 3, carol_addr, 1, Reject::FundsInsufficient),
        ("no ETH", 1, alice_eth, 1, Reject::FundsInsufficient),
        (
            "another user's address",
            1,
            bob_addr,
            1,
            Reject::WithdrawalAddressNotFound,
        ),
        ("address 0", 1, AddressId(0), 1, Reject::WithdrawalAddressNotFound),
        (
            "unknown address",
            1,
            AddressId(999),
            1,
            Reject::WithdrawalAddressNotFound,
        ),
        (
            "removed address",
            1,
            removed,
            1,
            Reject::WithdrawalAddressNotFound,
        ),
        ("zero amount", 1, addr, 0, Reject::AmountZero),
        ("largest amount", 1, addr, u128::MAX, Reject::FundsInsufficient),
    ];
    let ledger_before = w.engine.ledger().state();
    for (name, user, address, amount, want) in cases {
        assert_eq!(w.request(user, address, amount, None), Err(want), "{name}");
    }
    assert_eq!(w.engine.ledger().state(), ledger_before);
    assert!(w.engine.wallet().withdrawals().is_empty());

    // Exactly everything (amount + fee = balance) is accepted.
    let x = w.request(1, addr, all - fee, None).unwrap();
    assert_eq!(w.bal(1, BTC), (all as i128, all, 0));
    // Nothing more, even of another size.
    assert_eq!(w.request(1, addr, 1, None), Err(Reject::FundsInsufficient));
    w.ok(Command::CancelWithdrawal {
        user: UserId(1),
        id: x.id,
    });
    assert_eq!(w.bal(1, BTC), (all as i128, 0, all));

    // Withdrawals switched off: refused (checked before cooling and funds), on again: accepted.
    w.switches(BTC, true, false);
    assert_eq!(w.request(1, addr, COIN, None), Err(Reject::WithdrawalsDisabled));
    assert_eq!(
        w.request(1, addr, all * 2, None),
        Err(Reject::WithdrawalsDisabled)
    );
    // ... while other assets and the rest of the lifecycle are unaffected.
    let (bob_w, bob_later) = {
        w.switches(BTC, true, true);
        let y = w.request(2, bob_addr, COIN / 2, None).unwrap();
        w.ok(Command::WithdrawalSigning { id: y.id });
        let z = w.request(2, bob_addr, COIN / 4, None).unwrap();
        w.switches(BTC, true, false);
        (y, z)
    };
    assert_eq!(w.request(1, alice_eth, 1, None), Err(Reject::FundsInsufficient));
    // A halted asset sends nothing new to the signer; what the signer already has completes.
    w.refused(
        Command::WithdrawalSigning { id: bob_later.id },
        Reject::WithdrawalsDisabled,
    );
    w.ok(Command::WithdrawalBroadcast {
        id: bob_w.id,
        txid: "bobtx".into(),
        network_fee: Amount(0),
    });
    w.ok(Command::WithdrawalConfirmed { id: bob_w.id });
    w.switches(BTC, true, true);
    w.request(1, addr, COIN, None).unwrap();
}

#[test]
fn client_ids_make_requests_idempotent() {
    let fee = 10;
    let (mut w, addr) = alice_can_withdraw(fee);
    w.fund(2, BTC, COIN);
    let bob_addr = w.add_address(2, BTC, "bc1qbob-out", 0).id;
    let other = w.add_address(1, BTC, "bc1qalice-2", 0).id;

    let x = w.request(1, addr, COIN, Some(7)).unwrap();
    assert_eq!(x.client_id, Some(7));
    assert_eq!(w.engine.wallet().withdrawal_by_client(UserId(1), 7), Some(x.id));
    let held = w.bal(1, BTC);
    // The same request again: the same withdrawal, nothing held twice.
    let retry = w.withdraw(1, addr, COIN, Some(7));
    let again = w.noop(retry);
    assert_eq!(again, Reply::Withdrawal(x.clone()));
    assert_eq!(w.bal(1, BTC), held);
    assert_eq!(w.engine.wallet().withdrawals().len(), 1);
    // The same client id for another request.
    let dup = |w: &mut W, address: AddressId, amount: u128| w.withdraw(1, address, amount, Some(7));
    let cmd = dup(&mut w, addr, COIN + 1);
    w.refused(cmd, Reject::DuplicateClientWithdrawalId);
    let cmd = dup(&mut w, other, COIN);
    w.refused(cmd, Reject::DuplicateClientWithdrawalId);
    // Client ids are per user.
    let y = w.request(2, bob_addr, 1_000, Some(7)).unwrap();
    assert_ne!(x.id, y.id);
    assert_eq!(w.engine.wallet().withdrawal_by_client(UserId(2), 7), Some(y.id));
    assert_eq!(w.engine.wallet().withdrawal_by_client(UserId(1), 8), None);
    // No client id: every request is a new withdrawal.
    let z1 = w.request(1, addr, 5, None).unwrap();
    let z2 = w.request(1, addr, 5, None).unwrap();
    assert_ne!(z1.id, z2.id);

    // Once resolved, a resubmission still answers the original (it never withdraws twice).
    w.ok(Command::CancelWithdrawal {
        user: UserId(1),
        id: x.id,
    });
    let cmd = dup(&mut w, addr, COIN);
    let again = w.noop(cmd);
    match again {
        Reply::Withdrawal(r) => assert_eq!((r.id, r.status), (x.id, WithdrawalStatus::Cancelled)),
        other => panic!("{other:?}"),
    }
    let cmd = dup(&mut w, addr, 2 * COIN);
    w.refused(cmd, Reject::DuplicateClientWithdrawalId);
}

#[test]
fn cancel_and_fail_release_the_hold_exactly() {
    let fee = 12_345;
    let (mut w, addr) = alice_can_withdraw(fee);
    w.fund(2, BTC, COIN);
    let start = w.bal(1, BTC);

    let x = w.request(1, addr, 2 * COIN, None).unwrap();
    assert_eq!(w.bal(1, BTC).1, 2 * COIN + fee);
    let cancel = |user: u64, id: WithdrawalId| Command::CancelWithdrawal {
        user: UserId(user),
        id,
    };
    // Only the owner can cancel; unknown ids are not found either.
    w.refused(cancel(2, x.id), Reject::WithdrawalNotFound);
    w.refused(cancel(1, WithdrawalId(0)), Reject::WithdrawalNotFound);
    w.refused(cancel(1, WithdrawalId(99)), Reject::WithdrawalNotFound);
    let c = w.withdrawal_reply(cancel(1, x.id));
    assert_eq!((c.status, c.updated_ns), (WithdrawalStatus::Cancelled, w.now_ns));
    assert_eq!(w.bal(1, BTC), start, "cancel releases exactly the hold");
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 0);
    // Both holds (amount and fee) were voided, in one linked pair.
    let voided: Vec<TransferId> = w.engine.ledger().transfers()[w.engine.ledger().transfers().len() - 2..]
        .iter()
        .filter_map(|t| match t.request.kind {
            TransferKind::VoidPending { pending } => Some(pending),
            _ => None,
        })
        .collect();
    assert_eq!(voided.len(), 2);
    for p in voided {
        assert_eq!(w.engine.ledger().pending_state(p), Some(PendingState::Voided));
    }
    // Resolved once only.
    w.refused(cancel(1, x.id), Reject::WithdrawalStateInvalid);
    w.refused(
        Command::WithdrawalBroadcast {
            id: x.id,
            txid: "t".into(),
            network_fee: Amount(0),
        },
        Reject::WithdrawalStateInvalid,
    );
    w.refused(
        Command::FailWithdrawal {
            id: x.id,
            reason: "late".into(),
        },
        Reject::WithdrawalStateInvalid,
    );

    // Failing needs a reason, then releases the hold and records why.
    let y = w.request(1, addr, COIN, None).unwrap();
    for reason in [String::new(), "   ".into(), "\n".into(), "r".repeat(1025)] {
        w.refused(
            Command::FailWithdrawal {
                id: y.id,
                reason: reason.clone(),
            },
            Reject::ReasonRequired,
        );
    }
    w.refused(
        Command::FailWithdrawal {
            id: WithdrawalId(99),
            reason: "signer".into(),
        },
        Reject::WithdrawalNotFound,
    );
    let f = w.withdrawal_reply(Command::FailWithdrawal {
        id: y.id,
        reason: "signer refused: address screening".into(),
    });
    assert_eq!(
        (f.status, f.reason.as_deref()),
        (
            WithdrawalStatus::Failed,
            Some("signer refused: address screening")
        )
    );
    assert_eq!(w.bal(1, BTC), start);
    w.refused(cancel(1, y.id), Reject::WithdrawalStateInvalid);
    w.refused(
        Command::WithdrawalConfirmed { id: y.id },
        Reject::WithdrawalStateInvalid,
    );

    // With no fee there is a single hold; the same lifecycle holds.
    w.ok(Command::SetWithdrawalFee {
        asset: BTC,
        fee: Amount(0),
    });
    let z = w.request(1, addr, COIN, None).unwrap();
    assert_eq!(z.fee, Amount(0));
    assert_eq!(w.bal(1, BTC).1, COIN);
    w.ok(Command::FailWithdrawal {
        id: z.id,
        reason: "operator".into(),
    });
    assert_eq!(w.bal(1, BTC), start);
    let v = w.request(1, addr, COIN, None).unwrap();
    w.ok(Command::WithdrawalSigning { id: v.id });
    w.ok(Command::WithdrawalBroadcast {
        id: v.id,
        txid: "v".into(),
        network_fee: Amount(0),
    });
    assert_eq!(w.bal(1, BTC).0, start.0 - COIN as i128);
    assert_eq!(w.status(v.id), WithdrawalStatus::Broadcast);
    // A fee change applies to later requests only.
    w.ok(Command::SetWithdrawalFee {
        asset: BTC,
        fee: Amount(777),
    });
    w.ok(Command::WithdrawalConfirmed { id: v.id });
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 0);
    assert_eq!(w.request(1, addr, 1, None).unwrap().fee, Amount(777));
    w.refused(
        Command::SetWithdrawalFee {
            asset: AssetId(3),
            fee: Amount(1),
        },
        Reject::AssetNotFound,
    );
}

#[test]
fn per_user_limits() {
    let mut w = W::new();
    w.fund(1, BTC, COIN); // its first deposit address
    for i in 1..DEPOSIT_ADDRESSES_PER_ACCOUNT_MAX {
        w.assign(1, BTC, &format!("addr-{i}")).unwrap();
    }
    w.refused(
        Command::AssignDepositAddress {
            user: UserId(1),
            asset: BTC,
            address: "one-more".into(),
        },
        Reject::LimitExceeded,
    );
    // A known address is still answered; other assets and users have their own room.
    w.noop(Command::AssignDepositAddress {
        user: UserId(1),
        asset: BTC,
        address: "addr-1".into(),
    });
    w.assign(1, ETH, "one-more").unwrap();
    w.assign(2, BTC, "one-more").unwrap();

    // Open withdrawals per user.
    let a = w.add_address(1, BTC, "out", 0).id;
    let open: Vec<WithdrawalId> = (0..WITHDRAWALS_OPEN_PER_USER_MAX)
        .map(|_| w.request(1, a, 1, None).unwrap().id)
        .collect();
    assert_eq!(w.request(1, a, 1, None), Err(Reject::LimitExceeded));
    // Broadcast ones are still open; completed or cancelled ones make room.
    w.ok(Command::WithdrawalSigning { id: open[0] });
    w.ok(Command::WithdrawalBroadcast {
        id: open[0],
        txid: "t0".into(),
        network_fee: Amount(0),
    });
    assert_eq!(w.request(1, a, 1, None), Err(Reject::LimitExceeded));
    w.ok(Command::WithdrawalConfirmed { id: open[0] });
    w.ok(Command::CancelWithdrawal {
        user: UserId(1),
        id: open[1],
    });
    w.request(1, a, 1, None).unwrap();
    w.request(1, a, 1, None).unwrap();
    assert!(w.request(1, a, 1, None).is_err());
}

/// Clients address their own transfers only: a `Transfers` command may not post, void or
/// reverse a transfer the engine made for the wallet (the records would no longer match the
/// ledger, and the audit would halt the engine).
#[test]
fn wallet_transfers_cannot_be_resolved_by_clients() {
    let (mut w, addr) = alice_can_withdraw(100);
    let x = w.request(1, addr, COIN, None).unwrap();
    let find = |w: &W, code: u16, hold: bool| {
        w.engine
            .ledger()
            .transfers()
            .iter()
            .find(|t| t.request.code == code && matches!(t.request.kind, TransferKind::Hold { .. }) == hold)
            .unwrap()
            .request
            .id
    };
    let hold = find(&w, TRANSFER_CODE_WITHDRAWAL, true);
    let fee_hold = find(&w, TRANSFER_CODE_WITHDRAWAL_FEE, true);
    let credit = find(&w, TRANSFER_CODE_DEPOSIT, false);
    let one = |kind: TransferKind| {
        Command::Transfers(vec![TransferRequest {
            id: TransferId(1),
            kind,
            linked: false,
            code: 1,
            user_data: 0,
        }])
    };
    for kind in [
        TransferKind::VoidPending { pending: hold },
        TransferKind::VoidPending { pending: fee_hold },
        TransferKind::PostPending {
            pending: hold,
            amount: None,
        },
        TransferKind::PostPending {
            pending: fee_hold,
            amount: Some(Amount(1)),
        },
        TransferKind::Reverse { original: credit },
    ] {
        w.refused(one(kind), Reject::TransferIdReserved);
    }
    assert_eq!(w.status(x.id), WithdrawalStatus::Requested);
    w.ok(Command::WithdrawalSigning { id: x.id });
    w.ok(Command::WithdrawalBroadcast {
        id: x.id,
        txid: "t".into(),
        network_fee: Amount(0),
    });
    let posted = TransferId(hold.0 | 1);
    w.refused(
        one(TransferKind::Reverse { original: posted }),
        Reject::TransferIdReserved,
    );
    w.ok(Command::WithdrawalConfirmed { id: x.id });
    let settled = find(&w, TRANSFER_CODE_WITHDRAWAL_SETTLE, false);
    w.refused(
        one(TransferKind::Reverse { original: settled }),
        Reject::TransferIdReserved,
    );
}

// --- API keys -------------------------------------------------------------------------------

/// A key that may view and trade (not withdraw), usable from anywhere, never expiring.
pub(crate) fn key(id: &str, user: u64) -> ApiKey {
    ApiKey {
        id: id.into(),
        user: UserId(user),
        label: "trading bot".into(),
        permissions: Permissions {
            view: true,
            trade: true,
            withdraw: false,
        },
        secret: KeySecret::Native { secret_hash: [7; 32] },
        created_ns: 0,
        revoked: false,
        ip_allowlist: Vec::new(),
        expires_ns: None,
    }
}

#[test]
fn api_keys_are_created_validated_and_revoked() {
    let mut w = W::new();
    let id = "kk_0123456789abcdef";
    // The engine sets the creation time and the revoked flag, whatever the command says.
    assert_eq!(
        w.ok(Command::CreateApiKey {
            key: ApiKey {
                created_ns: 1,
                revoked: true,
                ..key(id, 1)
            },
            proof: None,
        }),
        Reply::ApiKeyCreated
    );
    let k = w.engine.keys().get(id).unwrap().clone();
    assert_eq!(
        k,
        ApiKey {
            created_ns: w.now_ns,
            ..key(id, 1)
        }
    );
    assert!(matches!(w.events.as_slice(), [Event::Key(_)]));

    // With every permission, so with an allowlist and (from `create_key`) the user's proof.
    let coinbase = |sealed: usize| ApiKey {
        secret: KeySecret::Coinbase {
            sealed_secret: vec![1; sealed],
            passphrase_hash: [2; 32],
        },
        permissions: Permissions::ALL,
        ip_allowlist: vec!["203.0.113.0/24".into()],
        ..key("cb-key-0000000000001", 2)
    };
    let cases: Vec<(&str, ApiKey, Reject)> = vec![
        ("same id", key(id, 1), Reject::ApiKeyExists),
        ("same id, other user", key(id, 2), Reject::ApiKeyExists),
        ("15 characters", key("abcdefghijklmno", 1), Reject::ApiKeyInvalid),
        ("empty", key("", 1), Reject::ApiKeyInvalid),
        ("65 characters", key(&"k".repeat(65), 1), Reject::ApiKeyInvalid),
        ("a dot", key("abcdefgh.ijklmnop", 1), Reject::ApiKeyInvalid),
        ("a space", key("abcdefgh ijklmnop", 1), Reject::ApiKeyInvalid),
        ("a slash", key("abcdefgh/ijklmnop", 1), Reject::ApiKeyInvalid),
        ("not ascii", key("abcdefghijklmnopé", 1), Reject::ApiKeyInvalid),
        (
            "label too long",
            ApiKey {
                label: "l".repeat(65),
                ..key("abcdefghijklmnop", 1)
            },
            Reject::ApiKeyInvalid,
        ),
        (
            "label with a control character",
            ApiKey {
                label: "bot\u{7}".into(),
                ..key("abcdefghijklmnop", 1)
            },
            Reject::ApiKeyInvalid,
        ),
        ("sealed secret empty", coinbase(0), Reject::ApiKeyInvalid),
        ("sealed secret too long", coinbase(257), Reject::ApiKeyInvalid),
    ];
    for (name, k, want) in cases {
        let cmd = w.create_key(k);
        assert_eq!(w.run(cmd), Err(want), "{name}");
    }
    // The limits themselves are accepted.
    for k in [
        key("abcdefghijklmnop", 1),
        key(&"K".repeat(64), 1),
        key("A-b_C-d_E-f_0-9_", 1),
        ApiKey {
            label: "l".repeat(64),
            ..key("label-at-the-limit", 1)
        },
        coinbase(256),
    ] {
        let name = k.id.clone();
        let cmd = w.create_key(k);
        w.ok(cmd);
        assert!(w.engine.keys().get(&name).is_some(), "{name}");
    }
    assert_eq!(w.engine.keys().of_user(UserId(1)).len(), 5);
    assert!(matches!(
        w.engine.keys().get("cb-key-0000000000001").unwrap().secret,
        KeySecret::Coinbase { .. }
    ));

    // Revoking: only the owner, only once.
    let revoke = |user: u64, id: &str| Command::RevokeApiKey {
        user: UserId(user),
        id: id.into(),
    };
    w.refused(revoke(2, id), Reject::ApiKeyNotFound);
    w.refused(revoke(1, "no-such-key-00000"), Reject::ApiKeyNotFound);
    assert_eq!(w.ok(revoke(1, id)), Reply::ApiKeyRevoked);
    assert!(w.engine.keys().get(id).is_none());
    assert!(w.engine.keys().of_user(UserId(1)).iter().all(|k| k.id != id));
    w.refused(revoke(1, id), Reject::ApiKeyNotFound);
    // A revoked id is never reused.
    let cmd = w.create_key(key(id, 1));
    w.refused(cmd, Reject::ApiKeyExists);

    // At most KEYS_PER_USER_MAX live keys per user; revoking one makes room.
    let have = w.engine.keys().of_user(UserId(1)).len();
    for i in have..KEYS_PER_USER_MAX {
        let cmd = w.create_key(key(&format!("bulk-key-{i:08}"), 1));
        w.ok(cmd);
    }
    let cmd = w.create_key(key("one-too-many-0000", 1));
    w.refused(cmd, Reject::LimitExceeded);
    w.ok(revoke(1, "abcdefghijklmnop"));
    let cmd = w.create_key(key("one-too-many-0000", 1));
    w.ok(cmd);
    // Other users are not limited by user 1.
    let cmd = w.create_key(key("someone-else-0001", 3));
    w.ok(cmd);
}

// --- replay and snapshots -------------------------------------------------------------------

/// Everything above in one log, with open withdrawals and pending deposits left at the end.
fn scenario() -> W {
    let (mut w, addr) = alice_can_withdraw(1_000);
    w.fund(2, BTC, 3 * COIN);
    w.fund(2, ETH, 5_000);
    let bob = w.add_address(2, BTC, "bc1qbob-out", 0).id;
    let bob_eth = w.add_address(2, ETH, "0xbob-out", 0).id;
    for (id, user) in [("alice-key-000001", 1), ("bob-key-00000001", 2)] {
        let cmd = w.create_key(key(id, user));
        w.ok(cmd);
    }
    w.ok(Command::RevokeApiKey {
        user: UserId(2),
        id: "bob-key-00000001".into(),
    });
    assert_eq!(w.assign(2, BTC, "dep-1-0"), Err(Reject::AddressTaken));
    let p = w.seen(BTC, "dep-1-0", "pend", 3, 42).unwrap();
    let d = w.seen(BTC, "dep-2-0", "drop", 0, 9).unwrap();
    w.ok(Command::DepositDropped { deposit: d });
    let _ = w.seen(BTC, "dep-2-0", "drop", 0, 10); // conflict, refused
    let a = w.request(1, addr, COIN, Some(1)).unwrap();
    let b = w.request(1, addr, 2 * COIN, Some(2)).unwrap();
    let c = w.request(2, bob, COIN, Some(1)).unwrap();
    let e = w.request(2, bob_eth, 100, None).unwrap();
    let _ = w.request(1, addr, 100 * COIN, Some(3)); // refused: funds
    w.ok(Command::WithdrawalSigning { id: a.id });
    w.ok(Command::WithdrawalBroadcast {
        id: a.id,
        txid: "out-a".into(),
        network_fee: Amount(0),
    });
    w.ok(Command::WithdrawalConfirmed { id: a.id });
    w.ok(Command::CancelWithdrawal {
        user: UserId(1),
        id: b.id,
    });
    w.ok(Command::WithdrawalSigning { id: c.id });
    w.ok(Command::WithdrawalBroadcast {
        id: c.id,
        txid: "out-c".into(),
        network_fee: Amount(0),
    });
    w.ok(Command::FailWithdrawal {
        id: e.id,
        reason: "screening".into(),
    });
    let _ = w.request(2, bob_eth, 200, Some(9)).unwrap();
    w.ok(Command::RemoveWithdrawalAddress {
        user: UserId(2),
        id: bob_eth,
    });
    w.ok(Command::RecordGas {
        asset: ETH,
        txid: format!("0x{}", "ab".repeat(32)),
        for_asset: ETH,
        amount: Amount(21),
    });
    w.switches(ETH, false, false);
    assert_eq!(
        w.engine.wallet().deposit(p).unwrap().status,
        DepositStatus::Pending
    );
    w
}

#[test]
fn replay_and_snapshots_reproduce_the_wallet() {
    let mut w = scenario();
    let live = w.engine.state_hash();
    assert_eq!(replay(&w.log).state_hash(), live, "replay");

    let mut restored = Engine::from_snapshot_bytes(&w.engine.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), live, "snapshot");
    assert_eq!(restored.wallet().state(), w.engine.wallet().state());
    assert_eq!(restored.keys().state(), w.engine.keys().state());
    assert_eq!(restored.identity().state(), w.engine.identity().state());
    // The rebuilt indexes answer the same queries.
    let (lw, rw) = (w.engine.wallet(), restored.wallet());
    for (txid, vout) in [("pend", 3), ("drop", 0), ("fund-0", 0), ("nope", 0)] {
        assert_eq!(
            rw.deposit_by_output(BTC, txid, vout),
            lw.deposit_by_output(BTC, txid, vout)
        );
    }
    let pending = lw.deposit_by_output(BTC, "pend", 3).unwrap();
    assert_eq!(rw.deposit(pending), lw.deposit(pending));
    assert_eq!(rw.deposit(pending).unwrap().status, DepositStatus::Pending);
    for d in lw.deposits() {
        assert_eq!(rw.deposit_by_output(d.asset, &d.txid, d.vout), Some(d.id));
    }
    for (user, client) in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 9), (3, 1)] {
        assert_eq!(
            rw.withdrawal_by_client(UserId(user), client),
            lw.withdrawal_by_client(UserId(user), client),
            "client id {client} of user {user}"
        );
    }
    assert!(rw.withdrawal_by_client(UserId(1), 2).is_some());
    assert_eq!(rw.withdrawal_by_client(UserId(1), 3), None);
    for user in 1..=3 {
        for asset in [BTC, ETH] {
            assert_eq!(
                rw.deposit_addresses(UserId(user), asset),
                lw.deposit_addresses(UserId(user), asset)
            );
        }
        assert_eq!(
            rw.withdrawal_addresses_of(UserId(user)),
            lw.withdrawal_addresses_of(UserId(user))
        );
        assert_eq!(
            restored.keys().of_user(UserId(user)),
            w.engine.keys().of_user(UserId(user))
        );
    }
    assert_eq!(rw.deposit_address_owner(BTC, "dep-2-0"), Some(UserId(2)));
    assert_eq!(rw.withdrawal_fee(BTC), Amount(1_000));

    // Both go on identically, including the idempotent paths that rely on the indexes.
    let more = vec![
        seen_cmd(BTC, "dep-1-0", "pend", 3, 42),
        seen_cmd(BTC, "dep-1-0", "pend", 3, 43),
        Command::DepositConfirmed { deposit: pending },
        w.withdraw(1, AddressId(1), 2 * COIN, Some(2)),
        w.withdraw(1, AddressId(1), COIN, Some(2)),
        Command::AssignDepositAddress {
            user: UserId(1),
            asset: BTC,
            address: "dep-2-0".into(),
        },
        w.create_key(key("alice-key-000001", 1)),
        Command::WithdrawalConfirmed { id: WithdrawalId(3) },
    ];
    for cmd in more {
        let (seq, ts) = (w.seq + 1, w.now_ns + STEP_NS);
        let mut ev = Vec::new();
        let r = restored.apply(seq, ts, &cmd, &mut ev);
        assert_eq!(w.run(cmd.clone()), r, "{cmd:?}");
        assert_eq!(restored.state_hash(), w.engine.state_hash(), "{cmd:?}");
    }
    assert_eq!(replay(&w.log).state_hash(), w.engine.state_hash());

    // A snapshot at every point of the log, then the rest replayed, gives the same state.
    let live = w.engine.state_hash();
    for cut in (0..w.log.len()).step_by(7) {
        assert_eq!(restore_and_replay(&w.log, cut).state_hash(), live, "cut at {cut}");
    }
}

// --- random wallet traffic ------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Seen {
        user: u64,
        amount: u128,
    },
    Resend {
        nth: usize,
        other_amount: bool,
    },
    Confirm {
        nth: usize,
    },
    Drop {
        nth: usize,
    },
    Request {
        user: u64,
        own: bool,
        amount: u128,
        client: Option<u128>,
    },
    Cancel {
        nth: usize,
        owner: bool,
    },
    Signing {
        nth: usize,
    },
    Broadcast {
        nth: usize,
    },
    Confirmed {
        nth: usize,
    },
    Reverse {
        nth: usize,
    },
    Move {
        sweep: bool,
        amount: u128,
        fee: u128,
    },
    Fail {
        nth: usize,
    },
    RecordTx {
        nth: usize,
    },
    RevertWithdrawal {
        nth: usize,
    },
    RevertMove {
        nth: usize,
    },
    Fee(u128),
    Company {
        nth: u32,
        amount: u128,
    },
    Withdrawals(bool),
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..=2, 1u128..2_000).prop_map(|(user, amount)| Op::Seen { user, amount }),
        1 => (0usize..64, any::<bool>()).prop_map(|(nth, other_amount)| Op::Resend { nth, other_amount }),
        4 => (0usize..64).prop_map(|nth| Op::Confirm { nth }),
        1 => (0usize..64).prop_map(|nth| Op::Drop { nth }),
        5 => (1u64..=2, prop::bool::weighted(0.9), 1u128..800, prop::option::of(0u128..4))
            .prop_map(|(user, own, amount, client)| Op::Request { user, own, amount, client }),
        2 => (0usize..64, prop::bool::weighted(0.8)).prop_map(|(nth, owner)| Op::Cancel { nth, owner }),
        3 => (0usize..64).prop_map(|nth| Op::Signing { nth }),
        3 => (0usize..64).prop_map(|nth| Op::Broadcast { nth }),
        1 => (0usize..64).prop_map(|nth| Op::Reverse { nth }),
        1 => (any::<bool>(), 1u128..1_500, 0u128..20).prop_map(|(sweep, amount, fee)| Op::Move { sweep, amount, fee }),
        2 => (0usize..64).prop_map(|nth| Op::Confirmed { nth }),
        1 => (0usize..64).prop_map(|nth| Op::Fail { nth }),
        2 => (0usize..64).prop_map(|nth| Op::RecordTx { nth }),
        1 => (0usize..64).prop_map(|nth| Op::RevertWithdrawal { nth }),
        1 => (0usize..64).prop_map(|nth| Op::RevertMove { nth }),
        1 => (0u128..60).prop_map(Op::Fee),
        1 => (0u32..4, 0u128..40).prop_map(|(nth, amount)| Op::Company { nth, amount }),
        1 => prop::bool::weighted(0.7).prop_map(Op::Withdrawals),
        2 => Just(Op::Wait),
    ]
}

fn run_wallet_ops(ops: &[Op]) -> W {
    let mut w = W::new();
    // Addresses cool for half an hour; `Wait` lets 20 minutes pass.
    let mut out = [AddressId(0); 3];
    for user in 1..=2u64 {
        w.assign(user, BTC, &format!("dep-{user}")).unwrap();
        out[user as usize] = w.add_address(user, BTC, &format!("out-{user}"), HOUR_NS / 2).id;
    }
    let mut txs = 0u32;
    for op in ops {
        let deposits = w.engine.wallet().deposits().len();
        let withdrawals = w.engine.wallet().withdrawals().len();
        let dep = |nth: usize| DepositId((nth % deposits.max(1)) as u64 + 1);
        let wd = |nth: usize| WithdrawalId((nth % withdrawals.max(1)) as u64 + 1);
        let cmd = match op {
            Op::Seen { user, amount } => {
                txs += 1;
                seen_cmd(BTC, &format!("dep-{user}"), &format!("tx{txs}"), txs % 3, *amount)
            }
            Op::Resend { nth, other_amount } => match w.engine.wallet().deposit(dep(*nth)) {
                Some(d) => seen_cmd(
                    d.asset,
                    &d.address,
                    &d.txid,
                    d.vout,
                    d.amount.0 + u128::from(*other_amount),
                ),
                None => continue,
            },
            Op::Confirm { nth } => Command::DepositConfirmed { deposit: dep(*nth) },
            Op::Drop { nth } => Command::DepositDropped { deposit: dep(*nth) },
            Op::Request {
                user,
                own,
                amount,
                client,
            } => w.withdraw(
                *user,
                out[if *own { *user } else { 3 - *user } as usize],
                *amount,
                *client,
            ),
            Op::Cancel { nth, owner } => {
                let id = wd(*nth);
                let user = w.engine.wallet().withdrawal(id).map_or(1, |x| x.user.0);
                Command::CancelWithdrawal {
                    user: UserId(if *owner { user } else { 3 - user }),
                    id,
                }
            }
            Op::Signing { nth } => Command::WithdrawalSigning { id: wd(*nth) },
            Op::Broadcast { nth } => Command::WithdrawalBroadcast {
                id: wd(*nth),
                txid: format!("out{nth}"),
                network_fee: Amount(*nth as u128 % 7),
            },
            Op::Reverse { nth } => Command::DepositReversed { deposit: dep(*nth) },
            Op::Move { sweep, amount, fee } => {
                txs += 1;
                Command::RecordCustodyMove {
                    asset: BTC,
                    kind: if *sweep {
                        CustodyMoveKind::Sweep
                    } else {
                        CustodyMoveKind::Refill
                    },
                    txid: format!("move{txs}"),
                    amount: Amount(*amount),
                    network_fee: Amount(*fee),
                }
            }
            Op::Confirmed { nth } => Command::WithdrawalConfirmed { id: wd(*nth) },
            Op::Fail { nth } => Command::FailWithdrawal {
                id: wd(*nth),
                reason: "signer".into(),
            },
            Op::RecordTx { nth } => Command::RecordWithdrawalTx {
                id: wd(*nth),
                txid: format!("out{nth}"),
                raw_tx: format!("{nth:04x}"),
                network_fee: Amount(*nth as u128 % 5),
            },
            Op::RevertWithdrawal { nth } => Command::RevertWithdrawal {
                id: wd(*nth),
                reason: "conflicted".into(),
            },
            Op::RevertMove { nth } => {
                let moves = w.engine.wallet().custody_moves();
                match moves.get(nth % moves.len().max(1)) {
                    Some(m) => Command::RevertCustodyMove {
                        asset: m.asset,
                        txid: m.txid.clone(),
                        reason: "conflicted".into(),
                    },
                    None => continue,
                }
            }
            Op::Fee(fee) => Command::SetWithdrawalFee {
                asset: BTC,
                fee: Amount(*fee),
            },
            // A company deposit (the same output again: a no-op, or refused for another amount).
            Op::Company { nth, amount } => Command::CompanyDeposit {
                asset: BTC,
                txid: format!("company-{nth}"),
                vout: 0,
                amount: Amount(*amount),
            },
            Op::Withdrawals(on) => Command::SetAssetSwitches {
                asset: BTC,
                switches: AssetSwitches {
                    withdrawals: *on,
                    ..AssetSwitches::ALL_ON
                },
            },
            Op::Wait => {
                w.now_ns += 20 * 60 * 1_000_000_000;
                Command::Tick
            }
        };
        // `run` audits, reconciles the ledger with the wallet's records, checks balances and
        // that a refusal changed nothing.
        let _ = w.run(cmd);
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_wallet_traffic_keeps_invariants_and_replays_exactly(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let w = run_wallet_ops(&ops);
        let live = w.engine.state_hash();
        assert_replays_to(&w.log, live);
    }
}

// --- custody: reorgs after crediting, signing, miner fees, hot/cold moves -------------------

#[test]
fn a_credited_deposit_that_leaves_the_chain_is_reversed_and_a_shortfall_is_a_risk_item() {
    let mut w = W::new();
    w.fund(1, BTC, 3 * COIN);
    w.fund(2, BTC, COIN);
    let d1 = DepositId(1);
    // Alice still has everything: the reversal takes it all back, nothing is missing.
    w.ok(Command::DepositReversed { deposit: d1 });
    assert_eq!(w.bal(1, BTC), (0, 0, 0));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), COIN as i128);
    let rec = w.engine.wallet().deposit(d1).unwrap();
    assert_eq!((rec.status, rec.shortfall), (DepositStatus::Reversed, Amount(0)));
    assert_eq!(w.engine.wallet().open_risk_items().count(), 0);
    // Twice: no-op; it cannot be confirmed or dropped any more.
    w.noop(Command::DepositReversed { deposit: d1 });
    w.refused(
        Command::DepositConfirmed { deposit: d1 },
        Reject::DepositStateInvalid,
    );
    w.refused(
        Command::DepositDropped { deposit: d1 },
        Reject::DepositStateInvalid,
    );

    // Bob withdrew most of his deposit before it vanished: he is debited what he has left and
    // the rest is missing money, booked to suspense and listed for operators.
    let a = w.add_address(2, BTC, "bc1qbob-out", 0);
    let x = w.request(2, a.id, COIN * 3 / 4, None).unwrap();
    let d2 = DepositId(2);
    // A pending (not yet credited) deposit cannot be reversed: that is a drop.
    let d3 = w
        .seen(BTC, &format!("dep-2-{BTC}"), "late", 0, COIN / 10)
        .unwrap();
    w.refused(
        Command::DepositReversed { deposit: d3 },
        Reject::DepositStateInvalid,
    );
    w.ok(Command::DepositReversed { deposit: d2 });
    let rec = w.engine.wallet().deposit(d2).unwrap().clone();
    assert_eq!(
        (rec.status, rec.shortfall),
        (DepositStatus::Reversed, Amount(COIN * 3 / 4))
    );
    assert_eq!(
        w.engine
            .wallet()
            .open_risk_items()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        vec![d2]
    );
    assert_eq!(w.sys(BTC, SystemAccount::Suspense), -((COIN * 3 / 4) as i128));
    // His withdrawal is still held and the pending deposit still shown.
    assert_eq!(w.status(x.id), WithdrawalStatus::Requested);
    let (_, held, available) = w.bal(2, BTC);
    assert_eq!((held, available), (COIN * 3 / 4 + COIN / 10, 0));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 0);
}

#[test]
fn a_reversal_after_a_sweep_takes_what_hot_lacks_from_cold() {
    let mut w = W::new();
    w.fund(1, BTC, 4 * COIN);
    w.ok(Command::RecordCustodyMove {
        asset: BTC,
        kind: CustodyMoveKind::Sweep,
        txid: "s".into(),
        amount: Amount(3 * COIN),
        network_fee: Amount(0),
    });
    w.ok(Command::DepositReversed {
        deposit: DepositId(1),
    });
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 0);
    assert_eq!(w.sys(BTC, SystemAccount::ColdWallet), 0);
    let d = w.engine.wallet().deposit(DepositId(1)).unwrap().clone();
    assert_eq!((d.reversed_from_cold, d.shortfall), (Amount(3 * COIN), Amount(0)));
    assert_eq!(w.bal(1, BTC), (0, 0, 0));
}

#[test]
fn signing_ends_cancellation_and_broadcast_books_the_miner_fee() {
    let (mut w, a) = alice_can_withdraw(1_000);
    let x = w.request(1, a, COIN, None).unwrap();
    // Broadcast needs signing first.
    w.refused(
        Command::WithdrawalBroadcast {
            id: x.id,
            txid: "t".into(),
            network_fee: Amount(500),
        },
        Reject::WithdrawalStateInvalid,
    );
    let s = w.withdrawal_reply(Command::WithdrawalSigning { id: x.id });
    assert_eq!(s.status, WithdrawalStatus::Signing);
    w.noop(Command::WithdrawalSigning { id: x.id });
    // The customer can no longer cancel; the funds stay held.
    w.refused(
        Command::CancelWithdrawal {
            user: UserId(1),
            id: x.id,
        },
        Reject::WithdrawalStateInvalid,
    );
    assert_eq!(w.bal(1, BTC).1, COIN + 1_000);
    let b = w.withdrawal_reply(Command::WithdrawalBroadcast {
        id: x.id,
        txid: "t".into(),
        network_fee: Amount(500),
    });
    assert_eq!(
        (b.status, b.network_fee),
        (WithdrawalStatus::Broadcast, Amount(500))
    );
    // The miner fee is paid out of the withdrawal's own fee: nothing left to network fees.
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), (10 * COIN - 500) as i128);
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 1_000 - 500);
    w.refused(
        Command::WithdrawalSigning { id: x.id },
        Reject::WithdrawalStateInvalid,
    );

    // The signer refuses another one while it is signing: the hold is released.
    let y = w.request(1, a, COIN, None).unwrap();
    w.ok(Command::WithdrawalSigning { id: y.id });
    let f = w.withdrawal_reply(Command::FailWithdrawal {
        id: y.id,
        reason: "signer refused: LIMIT_WINDOW".into(),
    });
    assert_eq!(f.status, WithdrawalStatus::Failed);
    assert_eq!(w.bal(1, BTC).1, 0);
}

#[test]
fn hot_cold_moves_are_ledger_transfers_recorded_once() {
    let mut w = W::new();
    w.fund(1, BTC, 10 * COIN);
    let sweep = |txid: &str, amount: u128, fee: u128| Command::RecordCustodyMove {
        asset: BTC,
        kind: CustodyMoveKind::Sweep,
        txid: txid.into(),
        amount: Amount(amount),
        network_fee: Amount(fee),
    };
    w.ok(sweep("s1", 8 * COIN, 300));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), (2 * COIN - 300) as i128);
    assert_eq!(w.sys(BTC, SystemAccount::ColdWallet), 8 * COIN as i128);
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 300);
    // The same report again changes nothing; another amount under the same txid is refused.
    w.noop(sweep("s1", 8 * COIN, 300));
    w.refused(sweep("s1", 8 * COIN, 301), Reject::DepositConflict);
    // The ledger never believes custody is below zero.
    w.refused(sweep("s2", 2 * COIN, 0), Reject::CustodyExceeded);
    w.refused(sweep("s3", 0, 0), Reject::AmountZero);
    w.refused(sweep("", 1, 0), Reject::TxidInvalid);
    w.ok(Command::RecordCustodyMove {
        asset: BTC,
        kind: CustodyMoveKind::Refill,
        txid: "r1".into(),
        amount: Amount(3 * COIN),
        network_fee: Amount(700),
    });
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), (5 * COIN - 300) as i128);
    assert_eq!(w.sys(BTC, SystemAccount::ColdWallet), (5 * COIN - 700) as i128);
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 1_000);
    assert_eq!(w.engine.wallet().custody_moves().len(), 2);
    // Customers are untouched by the company's own movements.
    assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 0, 10 * COIN));
}

// --- record, then broadcast; reverts of recorded transactions ---------------------------------

/// A withdrawal of `amount` by alice (fee 1000) taken to the signer.
fn signing(w: &mut W, a: AddressId, amount: u128) -> WithdrawalId {
    let x = w.request(1, a, amount, None).unwrap();
    w.ok(Command::WithdrawalSigning { id: x.id });
    x.id
}

fn record(id: WithdrawalId, txid: &str, raw: &str, fee: u128) -> Command {
    Command::RecordWithdrawalTx {
        id,
        txid: txid.into(),
        raw_tx: raw.into(),
        network_fee: Amount(fee),
    }
}

#[test]
fn a_withdrawal_transaction_is_recorded_before_it_is_broadcast() {
    let (mut w, a) = alice_can_withdraw(1_000);
    let x = w.request(1, a, COIN, None).unwrap();
    // Only from `Signing`; the transaction must be lowercase hex of whole bytes.
    w.refused(record(x.id, "t1", "0200", 500), Reject::WithdrawalStateInvalid);
    w.ok(Command::WithdrawalSigning { id: x.id });
    let long = "a".repeat(wallet_raw_max() + 2);
    for (txid, raw, want) in [
        ("", "0200", Reject::TxidInvalid),
        ("t1", "", Reject::RawTxInvalid),
        ("t1", "020", Reject::RawTxInvalid),
        ("t1", "02ZZ", Reject::RawTxInvalid),
        ("t1", "02AB", Reject::RawTxInvalid),
        ("t1", &long, Reject::RawTxInvalid),
    ] {
        w.refused(record(x.id, txid, raw, 500), want);
    }
    w.refused(
        record(WithdrawalId(9), "t1", "0200", 500),
        Reject::WithdrawalNotFound,
    );
    // Recorded: the customer is debited and the miner fee booked, before any broadcast.
    let s = w.withdrawal_reply(record(x.id, "t1", "0200", 500));
    assert_eq!(
        (s.status, s.txid.as_deref(), s.raw_tx.as_deref()),
        (WithdrawalStatus::Signed, Some("t1"), Some("0200"))
    );
    assert_eq!(w.bal(1, BTC).0, (9 * COIN - 1_000) as i128);
    assert_eq!(w.sys(BTC, SystemAccount::WithdrawalsInFlight), COIN as i128);
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 1_000 - 500);
    // The same again (a retry) is a no-op; another transaction is refused, at every later
    // step too.
    w.noop(record(x.id, "t1", "0200", 500));
    w.refused(record(x.id, "t2", "0300", 500), Reject::WithdrawalTxConflict);
    w.refused(
        Command::WithdrawalBroadcast {
            id: x.id,
            txid: "t2".into(),
            network_fee: Amount(500),
        },
        Reject::WithdrawalTxConflict,
    );
    w.refused(
        Command::FailWithdrawal {
            id: x.id,
            reason: "too late".into(),
        },
        Reject::WithdrawalStateInvalid,
    );
    // Broadcast of the recorded transaction books nothing more.
    let b = w.withdrawal_reply(Command::WithdrawalBroadcast {
        id: x.id,
        txid: "t1".into(),
        network_fee: Amount(500),
    });
    assert_eq!(b.status, WithdrawalStatus::Broadcast);
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
    assert_eq!(w.bal(1, BTC).0, (9 * COIN - 1_000) as i128);
    w.noop(Command::WithdrawalBroadcast {
        id: x.id,
        txid: "t1".into(),
        network_fee: Amount(500),
    });
    w.noop(record(x.id, "t1", "0200", 500));
    let c = w.withdrawal_reply(Command::WithdrawalConfirmed { id: x.id });
    assert_eq!(c.status, WithdrawalStatus::Completed);
}

fn wallet_raw_max() -> usize {
    kinko_core::wallet::RAW_TX_LEN_MAX
}

#[test]
fn a_reverted_withdrawal_credits_the_customer_back_at_every_stage_and_opens_an_incident() {
    // (stage reached before its transaction left the chain)
    for stage in [
        WithdrawalStatus::Signed,
        WithdrawalStatus::Broadcast,
        WithdrawalStatus::Completed,
    ] {
        let (mut w, a) = alice_can_withdraw(1_000);
        let id = signing(&mut w, a, 3 * COIN);
        let revert = Command::RevertWithdrawal {
            id,
            reason: "conflicted at depth -4".into(),
        };
        // Nothing recorded yet: nothing to revert (a failure releases the hold instead).
        w.refused(revert.clone(), Reject::WithdrawalStateInvalid);
        w.ok(record(id, "t1", "0200", 500));
        if stage != WithdrawalStatus::Signed {
            w.ok(Command::WithdrawalBroadcast {
                id,
                txid: "t1".into(),
                network_fee: Amount(500),
            });
        }
        if stage == WithdrawalStatus::Completed {
            w.ok(Command::WithdrawalConfirmed { id });
        }
        assert_eq!(w.status(id), stage);
        w.refused(
            Command::RevertWithdrawal {
                id,
                reason: " ".into(),
            },
            Reject::ReasonRequired,
        );
        w.refused(
            Command::RevertWithdrawal {
                id: WithdrawalId(7),
                reason: "x".into(),
            },
            Reject::WithdrawalNotFound,
        );
        let r = w.withdrawal_reply(revert.clone());
        assert_eq!(
            (r.status, r.shortfall, r.reason.as_deref()),
            (
                WithdrawalStatus::Reverted,
                Amount(0),
                Some("conflicted at depth -4")
            ),
            "{stage:?}"
        );
        // Alice has everything back, amount and fee; custody and fees as before the request.
        assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 0, 10 * COIN), "{stage:?}");
        assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 10 * COIN as i128);
        assert_eq!(w.sys(BTC, SystemAccount::WithdrawalsInFlight), 0);
        assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
        assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 0);
        // One incident, naming the transaction; reverting again changes nothing.
        let incidents = w.engine.admin().incidents.clone();
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].kind, "withdrawal_reverted");
        assert_eq!(incidents[0].txids, vec!["t1".to_owned()]);
        assert_eq!(incidents[0].opened_by, "system:custody");
        w.noop(revert);
        assert_eq!(w.engine.admin().incidents.len(), 1);
        // It is not sent again by itself, and counts toward no limit: alice asks again.
        for cmd in [
            Command::WithdrawalSigning { id },
            record(id, "t1", "0200", 500),
            Command::WithdrawalConfirmed { id },
        ] {
            w.refused(cmd, Reject::WithdrawalStateInvalid);
        }
        assert_eq!(w.engine.wallet().withdrawn_since(UserId(1), BTC, 0), 0);
        w.request(1, a, 3 * COIN, None).unwrap();
    }
}

#[test]
fn a_fee_that_fee_revenue_no_longer_holds_comes_from_suspense() {
    let (mut w, a) = alice_can_withdraw(1_000);
    let id = signing(&mut w, a, COIN);
    w.ok(record(id, "t1", "0200", 0));
    // The company moved its fee revenue away meanwhile (a client transfer, which the harness's
    // wallet-only reconciliation does not model: applied to the engine directly from here).
    let revenue = w.engine.assets()[BTC.0 as usize].system_account(SystemAccount::FeeRevenue);
    let treasury = w.engine.assets()[BTC.0 as usize].system_account(SystemAccount::CompanyTreasury);
    let apply = |w: &mut W, cmd: Command| {
        w.seq += 1;
        w.now_ns += STEP_NS;
        let r = w.engine.apply(w.seq, w.now_ns, &cmd, &mut Vec::new());
        w.log.push((w.seq, w.now_ns, cmd));
        w.engine.check().unwrap();
        balanced(&w.engine);
        r.unwrap()
    };
    apply(
        &mut w,
        Command::Transfers(vec![TransferRequest {
            id: TransferId(77),
            kind: TransferKind::Post {
                debit: revenue,
                credit: treasury,
                amount: Amount(600),
            },
            linked: false,
            code: 1,
            user_data: 0,
        }]),
    );
    let Reply::Withdrawal(r) = apply(
        &mut w,
        Command::RevertWithdrawal {
            id,
            reason: "conflicted".into(),
        },
    ) else {
        panic!()
    };
    assert_eq!(r.shortfall, Amount(600));
    assert_replays_to(&w.log, w.engine.state_hash());
    assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 0, 10 * COIN));
    assert_eq!(w.sys(BTC, SystemAccount::FeeRevenue), 0);
    assert_eq!(w.sys(BTC, SystemAccount::Suspense), -600);
    let i = &w.engine.admin().incidents[0];
    assert_eq!(i.missing, Amount(600));
}

#[test]
fn a_reverted_withdrawal_then_the_reversed_deposit_that_paid_it_leaves_nobody_debited() {
    // The issue's case: alice's deposit of 10 credited, 9 withdrawn, then both left the chain.
    // Reverting the withdrawal first (custody does) lets the reversal take the deposit back
    // whole: nothing missing. Had she traded 2 away meanwhile, 2 would go to suspense.
    for (spent, missing) in [(0u128, 0u128), (2 * COIN, 2 * COIN)] {
        let mut w = W::new();
        w.fund(1, BTC, 10 * COIN);
        let a = w.add_address(1, BTC, "bc1qalice-out", 0).id;
        let id = signing(&mut w, a, 7 * COIN);
        w.ok(record(id, "t1", "0200", 300));
        w.ok(Command::WithdrawalConfirmed { id });
        if spent > 0 {
            // Alice had withdrawn 2 more in a transaction that stays on chain.
            let other = signing(&mut w, a, spent);
            w.ok(record(other, "t2", "0300", 0));
        }
        w.ok(Command::RevertWithdrawal {
            id,
            reason: "conflicted".into(),
        });
        w.ok(Command::DepositReversed {
            deposit: DepositId(1),
        });
        assert_eq!(w.bal(1, BTC), (0, 0, 0));
        let d = w.engine.wallet().deposit(DepositId(1)).unwrap().clone();
        assert_eq!(d.shortfall, Amount(missing));
        assert_eq!(w.sys(BTC, SystemAccount::Suspense), -(missing as i128));
        assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
    }
}

#[test]
fn custody_moves_are_recorded_with_their_transaction_and_reverted_once() {
    let mut w = W::new();
    w.fund(1, BTC, 10 * COIN);
    let sweep = |txid: &str, raw: &str| Command::RecordCustodyTx {
        asset: BTC,
        kind: CustodyMoveKind::Sweep,
        txid: txid.into(),
        raw_tx: raw.into(),
        amount: Amount(8 * COIN),
        network_fee: Amount(300),
    };
    w.refused(sweep("s1", "0g"), Reject::RawTxInvalid);
    // Refused by the ledger: custody never broadcasts it.
    w.refused(
        Command::RecordCustodyTx {
            asset: BTC,
            kind: CustodyMoveKind::Sweep,
            txid: "s0".into(),
            raw_tx: "00".into(),
            amount: Amount(11 * COIN),
            network_fee: Amount(0),
        },
        Reject::CustodyExceeded,
    );
    let m = match w.ok(sweep("s1", "0200")) {
        Reply::CustodyMove(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (m.status, m.raw_tx.as_deref()),
        (CustodyMoveStatus::Recorded, Some("0200"))
    );
    w.noop(sweep("s1", "0200"));
    let revert = |txid: &str| Command::RevertCustodyMove {
        asset: BTC,
        txid: txid.into(),
        reason: "conflicted".into(),
    };
    w.refused(revert("nope"), Reject::CustodyMoveNotFound);
    w.refused(
        Command::RevertCustodyMove {
            asset: BTC,
            txid: "s1".into(),
            reason: "".into(),
        },
        Reject::ReasonRequired,
    );
    let r = match w.ok(revert("s1")) {
        Reply::CustodyMove(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!((r.status, r.shortfall), (CustodyMoveStatus::Reverted, Amount(0)));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 10 * COIN as i128);
    assert_eq!(w.sys(BTC, SystemAccount::ColdWallet), 0);
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
    assert_eq!(w.engine.admin().incidents[0].kind, "custody_move_reverted");
    w.noop(revert("s1"));
    assert_eq!(w.engine.admin().incidents.len(), 1);
}

#[test]
fn a_sweep_reverted_after_the_deposit_reversal_took_from_cold_moves_back_only_what_cold_has() {
    let mut w = W::new();
    w.fund(1, BTC, 4 * COIN);
    w.ok(Command::RecordCustodyTx {
        asset: BTC,
        kind: CustodyMoveKind::Sweep,
        txid: "s".into(),
        raw_tx: "00".into(),
        amount: Amount(3 * COIN),
        network_fee: Amount(0),
    });
    // The reversal came first and took what hot lacked from cold.
    w.ok(Command::DepositReversed {
        deposit: DepositId(1),
    });
    let m = match w.ok(Command::RevertCustodyMove {
        asset: BTC,
        txid: "s".into(),
        reason: "conflicted".into(),
    }) {
        Reply::CustodyMove(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.shortfall, Amount(3 * COIN));
    assert_eq!(w.sys(BTC, SystemAccount::ColdWallet), 0);
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), 0);
    assert_eq!(w.sys(BTC, SystemAccount::NetworkFees), 0);
}

// --- miner fees against company funds -----------------------------------------------------------

#[test]
fn miner_fees_are_paid_by_fee_revenue_then_the_treasury_and_only_then_by_customers_coins() {
    let (mut w, a) = alice_can_withdraw(1_000);
    let company = |txid: &str, vout: u32, amount: u128| Command::CompanyDeposit {
        asset: BTC,
        txid: txid.into(),
        vout,
        amount: Amount(amount),
    };
    let funds = |w: &W| {
        (
            w.sys(BTC, SystemAccount::FeeRevenue),
            w.sys(BTC, SystemAccount::CompanyTreasury),
            w.sys(BTC, SystemAccount::NetworkFees),
        )
    };
    // The company funds its treasury through its own deposit address: once per output.
    let hot = w.sys(BTC, SystemAccount::HotWallet);
    w.ok(company("c1", 0, 2_000));
    assert_eq!(funds(&w), (0, 2_000, 0));
    assert_eq!(w.sys(BTC, SystemAccount::HotWallet), hot + 2_000);
    w.noop(company("c1", 0, 2_000));
    w.refused(company("c1", 0, 2_001), Reject::DepositConflict);
    w.refused(company("c2", 0, 0), Reject::AmountZero);
    w.refused(company("", 0, 1), Reject::TxidInvalid);
    assert_eq!(w.engine.wallet().company_deposits().len(), 1);
    // Customers are untouched by it.
    assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 0, 10 * COIN));

    // A miner fee of 1_800 on a withdrawal that charges 1_000: its fee pays 1_000, the
    // treasury the other 800.
    let x = signing(&mut w, a, COIN);
    w.ok(record(x, "t1", "0200", 1_800));
    assert_eq!(funds(&w), (0, 1_200, 0));
    // A sweep's miner fee of 1_500: the treasury pays what it has, 300 are customers' coins
    // (what reconciliation reports as a reserve shortfall).
    w.ok(Command::RecordCustodyMove {
        asset: BTC,
        kind: CustodyMoveKind::Sweep,
        txid: "s1".into(),
        amount: Amount(COIN),
        network_fee: Amount(1_500),
    });
    assert_eq!(funds(&w), (0, 0, 300));

    // Their transactions leave the chain: each part goes back where it was charged.
    w.ok(Command::RevertCustodyMove {
        asset: BTC,
        txid: "s1".into(),
        reason: "conflicted".into(),
    });
    assert_eq!(funds(&w), (0, 1_200, 0));
    w.ok(Command::RevertWithdrawal {
        id: x,
        reason: "conflicted".into(),
    });
    assert_eq!(funds(&w), (0, 2_000, 0));
    assert_eq!(w.bal(1, BTC), (10 * COIN as i128, 0, 10 * COIN));
    assert_eq!(
        w.engine.wallet().withdrawal(x).map(|x| x.shortfall),
        Some(Amount(0))
    );
}

#[test]
fn gas_is_booked_once_per_transaction_in_the_native_ledger_only() {
    let (mut w, _) = alice_can_withdraw(1_000);
    w.fund(2, ETH, 5_000);
    let tx = |n: u8| format!("0x{}", hex_of(&[n; 32]));
    let gas = |txid: &str, for_asset: AssetId, amount: u128| Command::RecordGas {
        asset: ETH,
        txid: txid.into(),
        for_asset,
        amount: Amount(amount),
    };
    let funds = |w: &W, a: AssetId| {
        (
            w.sys(a, SystemAccount::FeeRevenue),
            w.sys(a, SystemAccount::CompanyTreasury),
            w.sys(a, SystemAccount::NetworkFees),
            w.sys(a, SystemAccount::HotWallet),
        )
    };
    w.ok(Command::CompanyDeposit {
        asset: ETH,
        txid: "c1".into(),
        vout: 0,
        amount: Amount(1_000),
    });
    let eth = funds(&w, ETH);
    let btc = funds(&w, BTC);
    // Gas of a transfer of another asset (a token's, here BTC stands for it): the ETH ledger
    // pays it, the treasury covers it, the other asset's ledger is untouched.
    w.ok(gas(&tx(1), BTC, 600));
    assert_eq!(funds(&w, ETH), (0, eth.1 - 600, eth.2, eth.3 - 600));
    assert_eq!(funds(&w, BTC), btc);
    assert_eq!(
        kinko_core::wallet::Wallet::gas_booked(w.engine.ledger(), &tx(1)),
        Some((ETH, BTC, Amount(600)))
    );
    assert_eq!(
        kinko_core::wallet::Wallet::gas_booked(w.engine.ledger(), &tx(2)),
        None
    );
    // Once per transaction: the same again changes nothing, another amount or purpose is refused.
    w.noop(gas(&tx(1), BTC, 600));
    w.refused(gas(&tx(1), BTC, 601), Reject::GasConflict);
    w.refused(gas(&tx(1), ETH, 600), Reject::GasConflict);
    w.refused(
        Command::RecordGas {
            asset: BTC,
            txid: tx(1),
            for_asset: BTC,
            amount: Amount(600),
        },
        Reject::GasConflict,
    );
    // Bad input: stable codes.
    w.refused(gas(&tx(3), BTC, 0), Reject::AmountZero);
    for bad in [
        "",
        "0x",
        "abc",
        &tx(3)[2..],
        &tx(3).to_uppercase(),
        &format!("{}0", tx(3)),
    ] {
        w.refused(gas(bad, BTC, 1), Reject::TxidInvalid);
    }
    w.refused(gas(&format!("0x{}", "g".repeat(64)), BTC, 1), Reject::TxidInvalid);
    w.refused(gas(&tx(3), AssetId(99), 1), Reject::AssetNotFound);
    w.refused(
        Command::RecordGas {
            asset: AssetId(99),
            txid: tx(3),
            for_asset: ETH,
            amount: Amount(1),
        },
        Reject::AssetNotFound,
    );
    // More than company funds hold: the rest stays in network fees (customers' coins).
    w.ok(gas(&tx(4), ETH, 700));
    assert_eq!(funds(&w, ETH), (0, 0, eth.2 + 300, eth.3 - 1_300));
    balanced(&w.engine);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
