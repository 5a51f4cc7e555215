//! Admin actions with passkey assertions the engine verifies itself, as someone who can inject
//! engine commands (root on the exchange host, past the gateway) would attack them: reviews and
//! two-person proposals with a TOTP code or a recovery code, with a forged or wrong-key
//! signature, with an assertion for another action, another relying party or origin, replayed;
//! an address whitelisted by an operator or without cooling; an admin's factors changed with a
//! forged proof, or through the recovery flow after a platform-wide revocation. Each is refused with its code and, through the wallet harness, proven to change
//! nothing (a twin engine that applied a `Tick` has the same state hash); the honest ones pass,
//! and the whole log replays to the same state.
//!
//! Admins 4 (ES256, P-256) and 5 (Ed25519) hold real keys here, signing what an authenticator
//! at `RP_ID` / `ORIGIN` would sign; the harness's users 1 to 3 hold placeholder keys and are
//! customers (whose proofs the engine checks as before).

use crate::assert_replays_to;
use crate::wallet::{alice_can_withdraw, open_session, session_of, COIN, DAY_NS, PASSWORD_HASH, STEP_NS, W};
use ed25519_dalek::Signer as _;
use kinko_core::admin::{AdminChange, ProposalStatus};
use kinko_core::engine::{AddressAuth, Command, Reply};
use kinko_core::identity::{
    challenge_bytes, Action, AdminRole, FactorRef, IdentityCommand, Passkey, ProofFactor, SessionLevel,
    StepUp, Via,
};
use kinko_core::money::{Amount, AssetId, UserId};
use kinko_core::passkey::RelyingParty;
use kinko_core::reject::Reject;
use kinko_core::risk::{AssetRisk, Condition, Decision, RiskPolicy, RiskRule};
use kinko_core::wallet::{AddressId, WithdrawalId, WithdrawalStatus};
use sha2::{Digest, Sha256};

const BTC: AssetId = AssetId(0);
const RP_ID: &str = "exchange.test";
const ORIGIN: &str = "https://exchange.test";

/// A software authenticator: the key, its credential id and its signature counter.
struct Key {
    credential_id: Vec<u8>,
    signer: Signer,
    count: u32,
}

enum Signer {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// What an authenticator and browser produce, before a test tampers with it.
struct Assertion {
    rp_id: String,
    origin: String,
    type_: String,
    flags: u8,
}

impl Default for Assertion {
    fn default() -> Assertion {
        Assertion {
            rp_id: RP_ID.into(),
            origin: ORIGIN.into(),
            type_: "webauthn.get".into(),
            flags: 0x05,
        }
    }
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Key {
    fn es256(seed: u8) -> Key {
        Key {
            credential_id: format!("admin-key-{seed}").into_bytes(),
            signer: Signer::Es256(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()),
            count: 0,
        }
    }
    fn ed25519(seed: u8) -> Key {
        Key {
            credential_id: format!("admin-key-{seed}").into_bytes(),
            signer: Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32])),
            count: 0,
        }
    }
    /// The stored form: tag byte (1 ES256, 2 Ed25519), then the key.
    fn public_key(&self) -> Vec<u8> {
        match &self.signer {
            Signer::Es256(k) => [&[1u8][..], k.verifying_key().to_encoded_point(false).as_bytes()].concat(),
            Signer::Ed25519(k) => [&[2u8][..], k.verifying_key().as_bytes()].concat(),
        }
    }
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Es256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
            Signer::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
        }
    }
    /// A proof for `action` issued at `issued_ns` with `nonce`, signed over `challenge_of`
    /// (normally the proof's own challenge) as `how` describes.
    fn proof_with(
        &mut self,
        action: &Action,
        issued_ns: u64,
        nonce: [u8; 16],
        signed_challenge: Option<[u8; 60]>,
        how: &Assertion,
    ) -> StepUp {
        self.count += 1;
        let challenge = signed_challenge.unwrap_or(challenge_bytes(issued_ns, &nonce, &action.digest()));
        let mut authenticator_data = Sha256::digest(how.rp_id.as_bytes()).to_vec();
        authenticator_data.push(how.flags);
        authenticator_data.extend_from_slice(&self.count.to_be_bytes());
        let client_data_json = serde_json::json!({
            "type": how.type_,
            "challenge": b64url(&challenge),
            "origin": how.origin,
        })
        .to_string()
        .into_bytes();
        let signed = [&authenticator_data[..], &Sha256::digest(&client_data_json)[..]].concat();
        StepUp {
            action: action.digest(),
            issued_ns,
            nonce,
            factor: ProofFactor::Passkey {
                credential_id: self.credential_id.clone(),
                authenticator_data,
                client_data_json,
                signature: self.sign(&signed),
            },
        }
    }
}

/// The harness of the admin attack tables: alice (user 1) can withdraw, everything is held for
/// review, admins 4 and 5 hold real keys, and the relying party is journaled.
struct A {
    w: W,
    address: AddressId,
    keys: [Key; 2],
    nonce: u32,
}

impl A {
    fn new() -> A {
        let (mut w, address) = alice_can_withdraw(0);
        let keys = [Key::es256(4), Key::ed25519(5)];
        for (user, key) in [(4u64, &keys[0]), (5, &keys[1])] {
            register_admin(&mut w, user, key);
        }
        w.ok(Command::SetRiskPolicy(RiskPolicy {
            rules: vec![RiskRule {
                name: "all".into(),
                asset: None,
                when: Condition::Always,
                then: Decision::Review,
            }],
            assets: vec![AssetRisk {
                asset: BTC,
                dual_approval_from: Amount(100 * COIN),
                hot_outflow_per_hour: Amount(1_000 * COIN),
            }],
            ..RiskPolicy::default()
        }));
        // Until the relying party is journaled, proofs are checked as old journals were.
        assert_eq!(
            w.ok(Command::SetRelyingParty(RelyingParty {
                id: RP_ID.into(),
                origins: vec![ORIGIN.into()],
            })),
            Reply::Done
        );
        A {
            w,
            address,
            keys,
            nonce: 0,
        }
    }

    fn key(&mut self, admin: u64) -> &mut Key {
        &mut self.keys[(admin - 4) as usize]
    }

    fn nonce(&mut self) -> [u8; 16] {
        self.nonce += 1;
        let mut n = [0xad; 16];
        n[..4].copy_from_slice(&self.nonce.to_be_bytes());
        n
    }

    /// An honest assertion by `admin` for `action`, issued at the next step.
    fn proof(&mut self, admin: u64, action: &Action) -> StepUp {
        self.proof_as(admin, action, &Assertion::default())
    }

    fn proof_as(&mut self, admin: u64, action: &Action, how: &Assertion) -> StepUp {
        let issued = self.w.now_ns + STEP_NS;
        let nonce = self.nonce();
        self.key(admin).proof_with(action, issued, nonce, None, how)
    }

    /// A withdrawal by alice, held for review.
    fn held(&mut self) -> WithdrawalId {
        let x = self.w.request(1, self.address, COIN, None).unwrap();
        assert_eq!(x.status, WithdrawalStatus::Review);
        x.id
    }

    fn review(&self, id: WithdrawalId, reviewer: u64, approve: bool, proof: StepUp) -> Command {
        Command::ReviewWithdrawal {
            id,
            reviewer: UserId(reviewer),
            approve,
            reason: "checked".into(),
            via: Via::Session(session_of(reviewer)),
            proof,
        }
    }
}

/// What a reviewer approves: the withdrawal as recorded (id, requester, asset, address, amount).
fn review_action(w: &W, id: WithdrawalId, reviewer: u64, approve: bool) -> Action {
    w.engine
        .wallet()
        .withdrawal(id)
        .expect("the withdrawal under review")
        .review_action(UserId(reviewer), approve)
}

/// Registers admin `user` with a full session and `key` as its passkey, then gives it the
/// security, risk and treasury roles through the operator's bootstrap.
fn register_admin(w: &mut W, user: u64, key: &Key) {
    w.ok(Command::Identity(IdentityCommand::Register {
        email: format!("admin{user}@example.com"),
        password_hash: PASSWORD_HASH.into(),
    }));
    w.ok(Command::Identity(open_session(
        user,
        session_of(user),
        SessionLevel::Full,
        w.now_ns + 30 * DAY_NS,
        PASSWORD_HASH,
    )));
    w.ok(Command::Identity(IdentityCommand::EnrolPasskey {
        user: UserId(user),
        passkey: Passkey {
            credential_id: key.credential_id.clone(),
            public_key: key.public_key(),
            sign_count: 0,
            label: "admin key".into(),
            created_ns: 0,
        },
        proof: None,
        recovery: vec![[user as u8; 32]],
    }));
    w.ok(Command::Identity(IdentityCommand::SetRoles {
        user: UserId(user),
        roles: vec![AdminRole::SecurityAdmin, AdminRole::Risk, AdminRole::Treasury],
        requested_by: "operator".into(),
        reason: "bootstrap".into(),
    }));
}

#[test]
fn an_injected_review_needs_the_reviewers_own_passkey_assertion() {
    let mut a = A::new();
    let id = a.held();
    let action = review_action(&a.w, id, 4, true);
    // A TOTP code (whoever holds the host can mint one) and a recovery code (its hash is in
    // the engine's state) are refused for an admin action, whatever they say.
    let totp = a.w.step_up(
        4,
        &action,
        ProofFactor::Totp {
            step: (a.w.now_ns + STEP_NS) / 30_000_000_000,
            code: "123456".into(),
        },
    );
    let cmd = a.review(id, 4, true, totp);
    a.w.refused(cmd, Reject::AdminPasskeyRequired);
    let recovery =
        a.w.step_up(4, &action, ProofFactor::Recovery { code_hash: [4; 32] });
    let cmd = a.review(id, 4, true, recovery);
    a.w.refused(cmd, Reject::AdminPasskeyRequired);
    // A forged signature: the reviewer's credential id, any bytes.
    let mut forged = a.proof(4, &action);
    if let ProofFactor::Passkey { signature, .. } = &mut forged.factor {
        *signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
    }
    let cmd = a.review(id, 4, true, forged);
    a.w.refused(cmd, Reject::PasskeyAssertionInvalid);
    // Signed by another admin's key under the reviewer's credential id.
    let issued = a.w.now_ns + STEP_NS;
    let nonce = a.nonce();
    let mut wrong_key = a
        .key(5)
        .proof_with(&action, issued, nonce, None, &Assertion::default());
    if let ProofFactor::Passkey { credential_id, .. } = &mut wrong_key.factor {
        *credential_id = a.keys[0].credential_id.clone();
    }
    let cmd = a.review(id, 4, true, wrong_key);
    a.w.refused(cmd, Reject::PasskeyAssertionInvalid);
    // An honest assertion, but over the challenge of another action (the rejection) while the
    // proof claims this one.
    let issued = a.w.now_ns + STEP_NS;
    let nonce = a.nonce();
    let other = challenge_bytes(issued, &nonce, &review_action(&a.w, id, 4, false).digest());
    let swapped = a
        .key(4)
        .proof_with(&action, issued, nonce, Some(other), &Assertion::default());
    let cmd = a.review(id, 4, true, swapped);
    a.w.refused(cmd, Reject::PasskeyAssertionInvalid);
    // An assertion honestly made for the other decision.
    let for_reject = a.proof(4, &review_action(&a.w, id, 4, false));
    let cmd = a.review(id, 4, true, for_reject);
    a.w.refused(cmd, Reject::StepUpActionMismatch);
    // Made for another relying party, on another origin, as a registration, or without the
    // user's presence.
    for how in [
        Assertion {
            rp_id: "evil.test".into(),
            ..Assertion::default()
        },
        Assertion {
            origin: "https://evil.test".into(),
            ..Assertion::default()
        },
        Assertion {
            type_: "webauthn.create".into(),
            ..Assertion::default()
        },
        Assertion {
            flags: 0x04,
            ..Assertion::default()
        },
    ] {
        let proof = a.proof_as(4, &action, &how);
        let cmd = a.review(id, 4, true, proof);
        a.w.refused(cmd, Reject::PasskeyAssertionInvalid);
    }
    // The reviewer's own assertion passes, once.
    let honest = a.proof(4, &action);
    let cmd = a.review(id, 4, true, honest.clone());
    let x = match a.w.ok(cmd) {
        Reply::Withdrawal(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(x.status, WithdrawalStatus::Approved);
    // Replayed on another held withdrawal's review by the same admin: its digest names the
    // first; replayed as it was: its challenge is used up.
    let second = a.held();
    let cmd = a.review(second, 4, true, honest.clone());
    a.w.refused(cmd, Reject::StepUpActionMismatch);
    let cmd = a.review(id, 4, true, honest);
    a.w.refused(cmd, Reject::StepUpReplayed);
    // Ed25519 verifies too.
    let proof = a.proof(5, &review_action(&a.w, second, 5, false));
    let cmd = a.review(second, 5, false, proof);
    a.w.ok(cmd);
    assert_eq!(a.w.status(second), WithdrawalStatus::Failed);
    let live = a.w.engine.state_hash();
    assert_replays_to(&a.w.log, live);
}

fn propose(a: &mut A, by: u64, change: &AdminChange, proof: Option<StepUp>) -> Command {
    let action = Action::ProposeChange {
        user: UserId(by),
        change: change.digest(),
    };
    let proof = proof.unwrap_or_else(|| a.proof(by, &action));
    Command::ProposeChange {
        by: UserId(by),
        change: change.clone(),
        reason: "needed".into(),
        via: Via::Session(session_of(by)),
        proof,
    }
}

fn approve_action(a: &A, id: u64, by: u64) -> Action {
    let change = a.w.engine.admin().proposal(id).unwrap().change.clone();
    Action::ApproveChange {
        user: UserId(by),
        proposal: id,
        change: change.digest(),
    }
}

fn approve(id: u64, by: u64, proof: StepUp) -> Command {
    Command::ApproveChange {
        id,
        by: UserId(by),
        via: Via::Session(session_of(by)),
        proof,
    }
}

#[test]
fn both_halves_of_a_two_person_change_need_passkey_assertions() {
    let mut a = A::new();
    let halt = Command::HaltWithdrawals {
        asset: Some(BTC),
        by: kinko_core::engine::HaltBy::System("reconciliation".into()),
        reason: "test".into(),
    };
    a.w.ok(halt);
    let change = AdminChange::ResumeWithdrawals { asset: Some(BTC) };
    // A proposal with a TOTP code, or with a forged assertion, is refused.
    let action = Action::ProposeChange {
        user: UserId(4),
        change: change.digest(),
    };
    let totp = a.w.step_up(
        4,
        &action,
        ProofFactor::Totp {
            step: (a.w.now_ns + STEP_NS) / 30_000_000_000,
            code: "123456".into(),
        },
    );
    let cmd = propose(&mut a, 4, &change, Some(totp));
    a.w.refused(cmd, Reject::AdminPasskeyRequired);
    let mut forged = a.proof(4, &action);
    if let ProofFactor::Passkey { client_data_json, .. } = &mut forged.factor {
        // The signature no longer covers what the client data says.
        *client_data_json = String::from_utf8(client_data_json.clone())
            .unwrap()
            .replace("webauthn.get", "webauthn.get ")
            .into_bytes();
    }
    let cmd = propose(&mut a, 4, &change, Some(forged));
    a.w.refused(cmd, Reject::PasskeyAssertionInvalid);
    let cmd = propose(&mut a, 4, &change, None);
    let id = match a.w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    // The approval: with a TOTP code, with the proposer's assertion replayed under the
    // approver's name, with the approver's assertion for another proposal: refused.
    let action = approve_action(&a, id, 5);
    let totp = a.w.step_up(
        5,
        &action,
        ProofFactor::Totp {
            step: (a.w.now_ns + STEP_NS) / 30_000_000_000,
            code: "123456".into(),
        },
    );
    a.w.refused(approve(id, 5, totp), Reject::AdminPasskeyRequired);
    let mut borrowed = a.proof(4, &action);
    if let ProofFactor::Passkey { credential_id, .. } = &mut borrowed.factor {
        *credential_id = a.keys[1].credential_id.clone();
    }
    a.w.refused(approve(id, 5, borrowed), Reject::PasskeyAssertionInvalid);
    let elsewhere = Action::ApproveChange {
        user: UserId(5),
        proposal: id + 1,
        change: change.digest(),
    };
    let proof = a.proof(5, &elsewhere);
    a.w.refused(approve(id, 5, proof), Reject::StepUpActionMismatch);
    assert!(!a.w.engine.asset(BTC).unwrap().switches.withdrawals);
    // The second admin's own assertion carries it out.
    let proof = a.proof(5, &action);
    a.w.ok(approve(id, 5, proof));
    assert_eq!(
        a.w.engine.admin().proposal(id).unwrap().status,
        ProposalStatus::Executed
    );
    assert!(a.w.engine.asset(BTC).unwrap().switches.withdrawals);
    // A halt by one admin needs that admin's assertion too.
    let action = Action::Halt {
        user: UserId(4),
        asset: Some(BTC),
    };
    let totp = a.w.step_up(
        4,
        &action,
        ProofFactor::Totp {
            step: (a.w.now_ns + STEP_NS) / 30_000_000_000 + 1,
            code: "123456".into(),
        },
    );
    let halt = |proof| Command::HaltWithdrawals {
        asset: Some(BTC),
        by: kinko_core::engine::HaltBy::Admin {
            user: UserId(4),
            via: Via::Session(session_of(4)),
            proof,
        },
        reason: "looks wrong".into(),
    };
    a.w.refused(halt(totp), Reject::AdminPasskeyRequired);
    let proof = a.proof(4, &action);
    a.w.ok(halt(proof));
    let live = a.w.engine.state_hash();
    assert_replays_to(&a.w.log, live);
}

#[test]
fn an_operator_or_zero_cooling_whitelisting_needs_two_admins() {
    let mut a = A::new();
    let add = |cooling_ns: u64, by: AddressAuth| Command::AddWithdrawalAddress {
        user: UserId(2),
        asset: BTC,
        address: "bc1qbob-out".into(),
        label: "mine".into(),
        cooling_ns,
        by,
    };
    let operator = || AddressAuth::Operator {
        name: "ops".into(),
        reason: "customer asked by phone".into(),
    };
    a.w.refused(add(DAY_NS, operator()), Reject::AddressQuorumRequired);
    a.w.refused(add(0, operator()), Reject::AddressQuorumRequired);
    // The user's own proof does not make an address usable at once either.
    let action = Action::AddWithdrawalAddress {
        user: UserId(2),
        asset: BTC,
        address: "bc1qbob-out".into(),
        label: "mine".into(),
    };
    let proof = a.w.passkey_proof(2, &action);
    a.w.refused(
        add(
            0,
            AddressAuth::User {
                via: Via::Session(session_of(2)),
                proof,
            },
        ),
        Reject::AddressQuorumRequired,
    );
    // With a cooling period, the user's proof whitelists it as always.
    let proof = a.w.passkey_proof(2, &action);
    let cooling = match a.w.ok(add(
        DAY_NS,
        AddressAuth::User {
            via: Via::Session(session_of(2)),
            proof,
        },
    )) {
        Reply::WithdrawalAddress(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(cooling.usable_at_ns, a.w.now_ns + DAY_NS);
    // Two admins can whitelist one usable at once.
    let change = AdminChange::WhitelistAddress {
        user: UserId(3),
        asset: BTC,
        address: "bc1qcarol-out".into(),
        label: "treasury-approved".into(),
        cooling_ns: 0,
    };
    let cmd = propose(&mut a, 4, &change, None);
    let id = match a.w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    assert!(a.w.engine.wallet().withdrawal_addresses_of(UserId(3)).is_empty());
    let action = approve_action(&a, id, 5);
    let proof = a.proof(5, &action);
    a.w.ok(approve(id, 5, proof));
    let added = a.w.engine.wallet().withdrawal_addresses_of(UserId(3));
    assert_eq!(added.len(), 1);
    assert_eq!(
        (added[0].address.as_str(), added[0].usable_at_ns),
        ("bc1qcarol-out", a.w.now_ns)
    );
    let live = a.w.engine.state_hash();
    assert_replays_to(&a.w.log, live);
}

#[test]
fn an_admins_factors_change_only_with_a_verified_passkey_assertion() {
    let mut a = A::new();
    // Enrolling an attacker's passkey for admin 4 with a forged assertion, or a TOTP code.
    let attacker = Key::es256(66);
    let action = Action::EnrolPasskey {
        user: UserId(4),
        credential_id: attacker.credential_id.clone(),
    };
    let enrol = |proof| {
        Command::Identity(IdentityCommand::EnrolPasskey {
            user: UserId(4),
            passkey: Passkey {
                credential_id: attacker.credential_id.clone(),
                public_key: attacker.public_key(),
                sign_count: 0,
                label: "mine now".into(),
                created_ns: 0,
            },
            proof: Some(proof),
            recovery: Vec::new(),
        })
    };
    let mut forged = a.proof(4, &action);
    if let ProofFactor::Passkey { signature, .. } = &mut forged.factor {
        signature[10] ^= 1;
    }
    a.w.refused(enrol(forged), Reject::PasskeyAssertionInvalid);
    let totp = a.w.step_up(
        4,
        &action,
        ProofFactor::Totp {
            step: (a.w.now_ns + STEP_NS) / 30_000_000_000,
            code: "123456".into(),
        },
    );
    a.w.refused(enrol(totp), Reject::AdminPasskeyRequired);
    // Removing the admin's passkey with a forged assertion.
    let credential = a.keys[0].credential_id.clone();
    let action = Action::RemovePasskey {
        user: UserId(4),
        credential_id: credential.clone(),
    };
    let mut forged = a.proof(5, &action);
    if let ProofFactor::Passkey { credential_id, .. } = &mut forged.factor {
        *credential_id = credential.clone();
    }
    a.w.refused(
        Command::Identity(IdentityCommand::RemoveFactor {
            user: UserId(4),
            factor: FactorRef::Passkey(credential.clone()),
            proof: forged,
        }),
        Reject::PasskeyAssertionInvalid,
    );
    // Platform-wide revocation (an operator's command, so also the host's) leaves the admin's
    // passkeys: the recovery flow, whose code hashes the host can read, enrols nothing for them.
    match a.w.ok(Command::Identity(IdentityCommand::RevokeEverything {
        requested_by: "operator".into(),
        reason: "breach".into(),
    })) {
        Reply::Identity(kinko_core::identity::IdentityReply::Revoked { .. }) => {}
        other => panic!("{other:?}"),
    }
    let u = a.w.engine.identity().user(UserId(4)).unwrap().clone();
    assert!(u.passkeys.len() == 1 && !u.reenrol_required);
    assert!(a.w.engine.identity().user(UserId(1)).unwrap().passkeys.is_empty());
    let action = Action::EnrolPasskey {
        user: UserId(4),
        credential_id: attacker.credential_id.clone(),
    };
    let recovery =
        a.w.step_up(4, &action, ProofFactor::Recovery { code_hash: [4; 32] });
    a.w.refused(enrol(recovery), Reject::AdminPasskeyRequired);
    // The admin's own assertion enrols a second key.
    let proof = a.proof(4, &action);
    a.w.ok(enrol(proof));
    assert_eq!(a.w.engine.identity().user(UserId(4)).unwrap().passkeys.len(), 2);
}

#[test]
fn the_relying_party_is_checked_and_before_it_old_journals_replay_as_they_were_applied() {
    let (mut w, _) = alice_can_withdraw(0);
    let key = Key::es256(4);
    register_admin(&mut w, 4, &key);
    // Before any relying party (a journal written by an earlier version), an admin's TOTP proof
    // is judged as it was then: the halt happens, and replays identically.
    let action = Action::Halt {
        user: UserId(4),
        asset: None,
    };
    let totp = w.step_up(
        4,
        &action,
        ProofFactor::Totp {
            step: (w.now_ns + STEP_NS) / 30_000_000_000,
            code: "123456".into(),
        },
    );
    let halt = |proof| Command::HaltWithdrawals {
        asset: None,
        by: kinko_core::engine::HaltBy::Admin {
            user: UserId(4),
            via: Via::Session(session_of(4)),
            proof,
        },
        reason: "looks wrong".into(),
    };
    // (Admin 4 has no TOTP: the old check refuses it for that reason, not for being TOTP.)
    w.refused(halt(totp), Reject::FactorNotEnrolled);
    let proof = w.passkey_proof_by(4, &key.credential_id, &action, w.now_ns + STEP_NS);
    w.ok(halt(proof));
    for bad in [
        RelyingParty {
            id: String::new(),
            origins: vec![ORIGIN.into()],
        },
        RelyingParty {
            id: RP_ID.into(),
            origins: Vec::new(),
        },
        RelyingParty {
            id: RP_ID.into(),
            origins: vec!["exchange.test".into()],
        },
    ] {
        w.refused(Command::SetRelyingParty(bad), Reject::RelyingPartyInvalid);
    }
    w.ok(Command::SetRelyingParty(RelyingParty {
        id: RP_ID.into(),
        origins: vec![ORIGIN.into()],
    }));
    assert_eq!(
        w.engine.identity().relying_party().map(|r| r.id.as_str()),
        Some(RP_ID)
    );
    // From now on the placeholder proof that passed above is refused.
    let action = Action::Halt {
        user: UserId(4),
        asset: Some(BTC),
    };
    let proof = w.passkey_proof_by(4, &key.credential_id, &action, w.now_ns + STEP_NS);
    w.refused(
        Command::HaltWithdrawals {
            asset: Some(BTC),
            by: kinko_core::engine::HaltBy::Admin {
                user: UserId(4),
                via: Via::Session(session_of(4)),
                proof,
            },
            reason: "again".into(),
        },
        Reject::PasskeyAssertionInvalid,
    );
    let live = w.engine.state_hash();
    assert_replays_to(&w.log, live);
}

fn freeze(by: u64, user: u64, proof: StepUp) -> Command {
    Command::FreezeUser {
        user: UserId(user),
        by: UserId(by),
        reason: "reported takeover".into(),
        via: Via::Session(session_of(by)),
        proof,
    }
}

/// An admin's freeze of a customer: only with the admin's own passkey assertion for this
/// customer (a TOTP code, an assertion for another customer or a replay change nothing); it
/// ends the customer's sessions (their withdrawals with them); undoing it takes two admins.
#[test]
fn an_injected_freeze_needs_the_admins_passkey_and_only_two_admins_undo_it() {
    let mut a = A::new();
    let action = Action::FreezeUser {
        user: UserId(4),
        target: UserId(1),
    };
    // A TOTP code is not an admin's proof.
    let totp = a.w.step_up(
        4,
        &action,
        ProofFactor::Totp {
            step: (a.w.now_ns + STEP_NS) / 30_000_000_000,
            code: "123456".into(),
        },
    );
    a.w.refused(freeze(4, 1, totp), Reject::AdminPasskeyRequired);
    // An assertion for another customer's freeze.
    let other = a.proof(
        4,
        &Action::FreezeUser {
            user: UserId(4),
            target: UserId(2),
        },
    );
    a.w.refused(freeze(4, 1, other), Reject::StepUpActionMismatch);
    // Admin 5's passkey presented as admin 4's: not a passkey of admin 4.
    let theirs = a.proof(5, &action);
    a.w.refused(freeze(4, 1, theirs), Reject::FactorNotEnrolled);
    // The admin's own: frozen, sessions ended, withdrawals refused.
    let honest = a.proof(4, &action);
    a.w.ok(freeze(4, 1, honest.clone()));
    let alice = a.w.engine.identity().user(UserId(1)).unwrap();
    assert_eq!(alice.status, kinko_core::identity::UserStatus::Frozen);
    assert!(alice
        .status_reason
        .as_deref()
        .unwrap()
        .contains("reported takeover"));
    assert!(a
        .w
        .engine
        .identity()
        .sessions_of(UserId(1), a.w.now_ns)
        .is_empty());
    // Her session is gone with the freeze (the API test shows a fresh one refused as frozen).
    assert_eq!(
        a.w.request(1, a.address, COIN, None).unwrap_err(),
        Reject::SessionInvalid
    );
    // Replayed, or frozen twice: refused.
    a.w.refused(freeze(4, 1, honest), Reject::AccountFrozen);
    // One admin proposing the unfreeze is not enough; the second's approval is.
    let change = AdminChange::UnfreezeUser { user: UserId(1) };
    let cmd = propose(&mut a, 4, &change, None);
    let id = match a.w.ok(cmd) {
        Reply::Proposal(p) => p.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        a.w.engine.identity().user(UserId(1)).unwrap().status,
        kinko_core::identity::UserStatus::Frozen
    );
    let proof = a.proof(5, &approve_action(&a, id, 5));
    a.w.ok(approve(id, 5, proof));
    assert_eq!(
        a.w.engine.identity().user(UserId(1)).unwrap().status,
        kinko_core::identity::UserStatus::Active
    );
    assert_eq!(
        a.w.engine.admin().proposal(id).unwrap().status,
        ProposalStatus::Executed
    );
    let live = a.w.engine.state_hash();
    assert_replays_to(&a.w.log, live);
}

/// The company's funds of an asset: `treasury` deposited at the company address, `insurance`
/// of it moved to the insurance fund.
fn company_funds(a: &mut A, asset: AssetId, treasury: u128, insurance: u128) {
    a.w.ok(Command::CompanyDeposit {
        asset,
        txid: format!("company-{}", asset.0),
        vout: 0,
        amount: Amount(treasury),
    });
    if insurance == 0 {
        return;
    }
    let acc = |s| a.w.engine.asset(asset).unwrap().system_account(s);
    use kinko_core::ledger::{SystemAccount as S, TransferKind, TransferRequest};
    let (t, i) = (acc(S::CompanyTreasury), acc(S::InsuranceFund));
    let reply = a.w.ok(Command::Transfers(vec![TransferRequest {
        id: kinko_core::TransferId(9_000 + u128::from(asset.0)),
        kind: TransferKind::Post {
            debit: t,
            credit: i,
            amount: Amount(insurance),
        },
        linked: false,
        code: 1,
        user_data: 0,
    }]));
    assert!(
        matches!(&reply, Reply::Transfers(r) if r.iter().all(Result::is_ok)),
        "{reply:?}"
    );
}

fn restitution_of(a: &mut A, by: u64, plan: &kinko_core::admin::RestitutionPlan) -> Command {
    propose(a, by, &AdminChange::Restitution(plan.clone()), None)
}

/// Issue 22, item 4, as someone with the exchange host would try it: a single admin, a tampered
/// plan, a plan paying an account the incident did not affect, more than the shortfall, funding
/// that skips the insurance fund, a replayed approval, an executed plan run twice. Each is
/// refused and changes nothing; the honest plan pays every affected customer exactly their
/// attributed share as one all-or-nothing chain, the incident records it and closes, and the
/// log replays to the same state.
#[test]
fn a_restitution_plan_pays_exactly_the_affected_customers_after_two_admins() {
    use kinko_core::admin::{Rate, RestitutionLine};
    use kinko_core::engine::Event;
    use kinko_core::ledger::SystemAccount as S;
    let mut a = A::new();
    // Alice (1) holds 10 BTC; user 2 holds 30; the company 20 (5 of it insurance).
    a.w.fund(2, BTC, 30 * COIN);
    company_funds(&mut a, BTC, 20 * COIN, 5 * COIN);
    a.w.ok(Command::OpenIncident {
        kind: "unapproved_outflow".into(),
        asset: Some(BTC),
        summary: "6 BTC left the hot wallet".into(),
        txids: vec!["ab".repeat(32)],
        missing: Amount(6 * COIN),
        opened_by: "system:reconciliation".into(),
        halt: true,
    });
    let incident = a.w.engine.admin().incident(1).unwrap().clone();
    // 6 BTC × 40 / 60: 4 BTC is the customers', spread 1 : 3 over alice and user 2.
    assert_eq!(incident.customer_share, Amount(4 * COIN));
    assert_eq!(
        incident.affected,
        vec![(UserId(1), Amount(COIN)), (UserId(2), Amount(3 * COIN))]
    );
    let plan = a.w.engine.restitution_plan(1, None).unwrap();
    assert_eq!(plan.total(), Some(Amount(4 * COIN)));
    assert_eq!(
        (plan.from_insurance, plan.from_treasury),
        (Amount(4 * COIN), Amount(0))
    );
    // Spend most of the insurance fund elsewhere: the plan now takes 1 BTC from it and the
    // rest from the treasury, and the stale plan is refused.
    let acc = |s| a.w.engine.asset(BTC).unwrap().system_account(s);
    let (ins, tre) = (acc(S::InsuranceFund), acc(S::CompanyTreasury));
    a.w.ok(Command::Transfers(vec![kinko_core::ledger::TransferRequest {
        id: kinko_core::TransferId(9_100),
        kind: kinko_core::ledger::TransferKind::Post {
            debit: ins,
            credit: tre,
            amount: Amount(4 * COIN),
        },
        linked: false,
        code: 1,
        user_data: 0,
    }]));
    let cmd = restitution_of(&mut a, 4, &plan);
    a.w.refused(cmd, Reject::RestitutionUnfunded);
    let plan = a.w.engine.restitution_plan(1, None).unwrap();
    assert_eq!(
        (plan.from_insurance, plan.from_treasury),
        (Amount(COIN), Amount(3 * COIN))
    );

    // The attack table: each plan is proposed by a treasury admin with a valid passkey, and
    // refused by the engine's own check of the plan against the incident.
    let mut bad = Vec::new();
    let mut more = plan.clone();
    more.lines[1].pay = Amount(more.lines[1].pay.0 + 1);
    more.from_treasury = Amount(more.from_treasury.0 + 1);
    bad.push((
        "pays more than the attributed share",
        more,
        Reject::RestitutionPlanMismatch,
    ));
    let mut other = plan.clone();
    other.lines[1].user = UserId(3);
    bad.push((
        "pays an unaffected account",
        other,
        Reject::RestitutionPlanMismatch,
    ));
    let mut extra = plan.clone();
    extra.lines.push(RestitutionLine {
        user: UserId(3),
        owed: Amount(1),
        pay: Amount(1),
    });
    extra.from_treasury = Amount(extra.from_treasury.0 + 1);
    bad.push((
        "adds an unaffected account",
        extra,
        Reject::RestitutionPlanMismatch,
    ));
    let mut dropped = plan.clone();
    dropped.lines.remove(0);
    dropped.from_insurance = Amount(COIN);
    dropped.from_treasury = Amount(2 * COIN);
    bad.push(("leaves a customer out", dropped, Reject::RestitutionPlanMismatch));
    let mut owed = plan.clone();
    owed.lines[0].owed = Amount(2 * COIN);
    owed.lines[0].pay = Amount(2 * COIN);
    owed.from_treasury = Amount(4 * COIN);
    bad.push(("claims a larger loss", owed, Reject::RestitutionPlanMismatch));
    let mut treasury_first = plan.clone();
    treasury_first.from_insurance = Amount(0);
    treasury_first.from_treasury = Amount(4 * COIN);
    bad.push((
        "skips the insurance fund",
        treasury_first,
        Reject::RestitutionUnfunded,
    ));
    let mut other_asset = plan.clone();
    other_asset.pay_asset = AssetId(1);
    bad.push((
        "pays another asset 1:1",
        other_asset,
        Reject::RestitutionPlanMismatch,
    ));
    let mut at_rate = plan.clone();
    at_rate.rate = Some(Rate { num: 1, den: 1 });
    bad.push((
        "a rate for the same asset",
        at_rate,
        Reject::RestitutionPlanMismatch,
    ));
    let mut no_incident = plan.clone();
    no_incident.incident = 9;
    bad.push(("names no incident", no_incident, Reject::IncidentNotFound));
    for (what, p, want) in bad {
        let cmd = restitution_of(&mut a, 4, &p);
        assert_eq!(a.w.run(cmd), Err(want), "{what}");
    }
    let before = a.w.engine.state_hash();

    // The honest plan, proposed twice (as two admins might): the first approved runs.
    let cmd = restitution_of(&mut a, 4, &plan);
    let Reply::Proposal(p1) = a.w.ok(cmd) else {
        panic!()
    };
    let cmd = restitution_of(&mut a, 5, &plan);
    let Reply::Proposal(p2) = a.w.ok(cmd) else {
        panic!()
    };
    assert_eq!(p1.change, AdminChange::Restitution(plan.clone()));
    // One admin alone: the proposer cannot approve their own.
    let action = approve_action(&a, p1.id, 4);
    let proof = a.proof(4, &action);
    a.w.refused(approve(p1.id, 4, proof), Reject::OwnProposal);
    // The approver signs what they were shown; a plan tampered with after they looked (another
    // digest) does not match the proposal's.
    let mut shown = plan.clone();
    shown.lines.swap(0, 1);
    let tampered = Action::ApproveChange {
        user: UserId(5),
        proposal: p1.id,
        change: AdminChange::Restitution(shown).digest(),
    };
    let proof = a.proof(5, &tampered);
    a.w.refused(approve(p1.id, 5, proof), Reject::StepUpActionMismatch);
    assert_eq!(a.w.bal(1, BTC).0, 10 * COIN as i128, "nothing moved yet");
    // The second admin's passkey: executed, as one linked chain.
    let action = approve_action(&a, p1.id, 5);
    let proof = a.proof(5, &action);
    a.w.ok(approve(p1.id, 5, proof.clone()));
    assert_ne!(a.w.engine.state_hash(), before);
    assert_eq!(a.w.bal(1, BTC).0, 11 * COIN as i128);
    assert_eq!(a.w.bal(2, BTC).0, 33 * COIN as i128);
    assert_eq!(a.w.sys(BTC, S::InsuranceFund), 0);
    assert_eq!(a.w.sys(BTC, S::CompanyTreasury), 16 * COIN as i128);
    let paid: Vec<(UserId, Amount)> =
        a.w.events
            .iter()
            .filter_map(|e| match e {
                Event::Admin(kinko_core::admin::AdminEvent::RestitutionPaid {
                    user,
                    amount,
                    incident: 1,
                    ..
                }) => Some((*user, *amount)),
                _ => None,
            })
            .collect();
    assert_eq!(paid, incident.affected, "one notice per customer paid");
    let i = a.w.engine.admin().incident(1).unwrap();
    assert_eq!(i.restitution, Some(p1.id));
    // The same approval again (a replay), the other proposal of the same plan, a new one:
    // refused, nothing paid twice.
    a.w.refused(approve(p1.id, 5, proof), Reject::ProposalNotOpen);
    let action = approve_action(&a, p2.id, 4);
    let proof = a.proof(4, &action);
    a.w.refused(approve(p2.id, 4, proof), Reject::RestitutionDone);
    let cmd = restitution_of(&mut a, 4, &plan);
    a.w.refused(cmd, Reject::RestitutionDone);
    assert_eq!(a.w.bal(1, BTC).0, 11 * COIN as i128);

    // A second incident paid in another asset at a stated rate: ETH (asset 1) minor units per
    // satoshi as 3/7, rounded up per customer.
    company_funds(&mut a, AssetId(1), 10_000 * COIN, 0);
    a.w.ok(Command::OpenIncident {
        kind: "reserve_shortfall".into(),
        asset: Some(BTC),
        summary: "a shortfall".into(),
        txids: vec![],
        missing: Amount(1_000_001),
        opened_by: "system:reconciliation".into(),
        halt: false,
    });
    let i2 = a.w.engine.admin().incident(2).unwrap().clone();
    let rate = Rate { num: 3, den: 7 };
    let plan2 = a.w.engine.restitution_plan(2, Some((AssetId(1), rate))).unwrap();
    for (l, (u, owed)) in plan2.lines.iter().zip(&i2.affected) {
        assert_eq!((l.user, l.owed), (*u, *owed));
        assert_eq!(l.pay.0, (owed.0 * 3).div_ceil(7));
    }
    assert_eq!(
        plan2.from_insurance,
        Amount(0),
        "no ETH insurance: all from the treasury"
    );
    let mut floor = plan2.clone();
    floor.lines[0].pay = Amount(floor.lines[0].owed.0 * 3 / 7);
    floor.from_treasury = floor.total().unwrap();
    if floor.lines[0].pay != plan2.lines[0].pay {
        let cmd = restitution_of(&mut a, 4, &floor);
        a.w.refused(cmd, Reject::RestitutionPlanMismatch);
    }
    let cmd = restitution_of(&mut a, 4, &plan2);
    let Reply::Proposal(p3) = a.w.ok(cmd) else {
        panic!()
    };
    let action = approve_action(&a, p3.id, 5);
    let proof = a.proof(5, &action);
    a.w.ok(approve(p3.id, 5, proof));
    for l in &plan2.lines {
        assert_eq!(a.w.bal(l.user.0, AssetId(1)).0, l.pay.0 as i128);
    }
    // Both incidents can now be closed.
    for id in [1u64, 2] {
        let action = Action::ResolveIncident {
            user: UserId(4),
            incident: id,
        };
        let proof = a.proof(4, &action);
        a.w.ok(Command::ResolveIncident {
            id,
            by: UserId(4),
            resolution: "customers made whole".into(),
            via: Via::Session(session_of(4)),
            proof,
        });
    }
    let live = a.w.engine.state_hash();
    assert_replays_to(&a.w.log, live);
}
