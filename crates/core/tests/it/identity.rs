//! Identity through `Engine::apply` only: registration, sessions, step-up proofs and the
//! attacks on them, API keys that may withdraw, whitelisting by the user or an operator, the
//! security-change lock, password reset, freezes, platform-wide revocation, audit of failed
//! logins, and replay/snapshot equality of identity traffic.
//!
//! It runs on the wallet tests' harness `W`: every command is audited and the ledger reconciled
//! with the wallet's records, and a refusal is proven to change nothing (its state hash equals
//! that of a twin engine that applied a `Tick`, and it emits no wallet, key or identity event).
//! `W::new` registers users 1 to 3, each with a full session `session_of(user)`, a passkey
//! `credential_of(user)` and recovery codes `recovery_of(user, 0 | 1)`. The engine verifies no
//! signature (the gateway does), so a proof is well formed when it names the right action, is
//! fresh and unused, and its passkey counter (bytes 33..37 of the authenticator data) grows.

use crate::assert_replays_to;
use crate::wallet::{
    alice_can_withdraw, credential_of, key, open_session, recovery_of, session_of, withdrawal, BTC, COIN,
    DAY_NS, ETH, HOUR_NS, PASSWORD_HASH, STEP_NS, USERS, W,
};
use kinko_core::engine::{AddressAuth, Command, Engine, Event, Reply};
use kinko_core::identity::{
    Action, FactorRef, IdentityCommand, IdentityEvent, IdentityReply, Language, Passkey, Policy, ProofFactor,
    SessionLevel, StepUp, UserStatus, Via, EMAIL_LEN_MAX, PASSWORD_HASH_LEN_MAX, RESET_TOKENS_PER_USER_MAX,
    SESSIONS_PER_USER_MAX, SESSION_TTL_MAX_NS, TOTP_STEP_NS,
};
use kinko_core::keys::{ApiKey, KeyEvent, Permissions, IP_ALLOWLIST_MAX};
use kinko_core::money::UserId;
use kinko_core::reject::Reject;
use kinko_core::wallet::{AddressId, WithdrawalStatus};
use proptest::prelude::*;

const NEW_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
const SECOND: u64 = 1_000_000_000;
/// The IP the harness's withdraw-scoped keys are used from, and an allowlist holding it.
const KEY_IP: &str = "203.0.113.9";
const KEY_NET: &str = "203.0.113.0/24";

fn run_id(w: &mut W, cmd: IdentityCommand) -> Result<IdentityReply, Reject> {
    w.run(Command::Identity(cmd)).map(|r| match r {
        Reply::Identity(r) => r,
        other => panic!("{other:?}"),
    })
}

fn ok_id(w: &mut W, cmd: IdentityCommand) -> IdentityReply {
    let c = format!("{cmd:?}");
    run_id(w, cmd).unwrap_or_else(|e| panic!("{c}: {e:?}"))
}

/// Refused with exactly `want`; the harness proves it changed nothing.
fn refused_id(w: &mut W, cmd: IdentityCommand, want: Reject) {
    w.refused(Command::Identity(cmd), want);
}

fn token(n: u8) -> [u8; 32] {
    [n; 32]
}

fn register(email: &str, password_hash: &str) -> IdentityCommand {
    IdentityCommand::Register {
        email: email.into(),
        password_hash: password_hash.into(),
    }
}

fn session(user: u64) -> Via {
    Via::Session(session_of(user))
}

fn user(w: &W, id: u64) -> kinko_core::identity::User {
    w.engine.identity().user(UserId(id)).unwrap().clone()
}

/// The user's live sessions at `at_ns`, oldest first: (token hash, level).
fn sessions(w: &W, user: u64, at_ns: u64) -> Vec<([u8; 32], SessionLevel)> {
    w.engine
        .identity()
        .sessions_of(UserId(user), at_ns)
        .iter()
        .map(|s| (s.token_hash, s.level))
        .collect()
}

fn identity_events(w: &W) -> Vec<IdentityEvent> {
    w.events
        .iter()
        .filter_map(|e| match e {
            Event::Identity(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The TOTP step current when `run` applies the next command.
fn step_now(w: &W) -> u64 {
    (w.now_ns + STEP_NS) / TOTP_STEP_NS
}

fn totp(step: u64) -> ProofFactor {
    ProofFactor::Totp {
        step,
        code: "123456".into(),
    }
}

fn with_counter(mut proof: StepUp, count: u32) -> StepUp {
    match &mut proof.factor {
        ProofFactor::Passkey {
            authenticator_data, ..
        } => authenticator_data[33..37].copy_from_slice(&count.to_be_bytes()),
        other => panic!("not a passkey proof: {other:?}"),
    }
    proof
}

fn passkey(credential_id: &[u8]) -> Passkey {
    Passkey {
        credential_id: credential_id.to_vec(),
        public_key: vec![1; 65],
        sign_count: 0,
        label: "another key".into(),
        created_ns: 0,
    }
}

/// Registers user `USERS + 1` with TOTP as its first factor (enrolled at the current step,
/// which that consumes), a full session `session_of(user)`, 10 BTC and an address usable now.
fn totp_user(w: &mut W) -> (u64, AddressId) {
    let u = USERS + 1;
    ok_id(w, register(&format!("user{u}@example.com"), PASSWORD_HASH));
    let expires = w.now_ns + DAY_NS;
    ok_id(
        w,
        open_session(u, session_of(u), SessionLevel::Full, expires, PASSWORD_HASH),
    );
    let first_step = step_now(w);
    ok_id(
        w,
        IdentityCommand::EnrolTotp {
            user: UserId(u),
            sealed_secret: vec![9; 48],
            first_step,
            proof: None,
            recovery: vec![recovery_of(u, 0)],
        },
    );
    assert_eq!(user(w, u).last_totp_step, first_step);
    w.fund(u, BTC, 10 * COIN);
    let address = w.add_address(u, BTC, "bc1qtotp-out", 0).id;
    (u, address)
}

/// A withdrawal by `user` through its full session, proven by a TOTP code of `step`.
fn totp_withdrawal(w: &mut W, user: u64, address: AddressId, amount: u128, step: u64) -> Command {
    let action = w.withdrawal_action(user, address, amount, None);
    let proof = w.step_up(user, &action, totp(step));
    withdrawal(user, address, amount, None, session(user), proof)
}

/// Opens a password session `old` for `user` and completes it with a passkey proof as `new`.
fn log_in(w: &mut W, user: u64, old: [u8; 32], new: [u8; 32], credential: &[u8]) {
    let expires = w.now_ns + DAY_NS;
    let r = ok_id(
        w,
        open_session(user, old, SessionLevel::Password, expires, PASSWORD_HASH),
    );
    assert_eq!(
        r,
        IdentityReply::Session {
            user: UserId(user),
            level: SessionLevel::Password
        }
    );
    let action = Action::Login {
        user: UserId(user),
        session: old,
    };
    let proof = w.passkey_proof_by(user, credential, &action, w.now_ns + STEP_NS);
    let r = ok_id(
        w,
        IdentityCommand::CompleteLogin {
            token_hash: old,
            new_token_hash: new,
            expires_ns: w.now_ns + DAY_NS,
            proof,
        },
    );
    assert_eq!(
        r,
        IdentityReply::Session {
            user: UserId(user),
            level: SessionLevel::Full
        }
    );
}

/// Creates a withdraw-scoped key for `user`, allowlisting `KEY_NET`; returns how to use it.
fn withdraw_key(w: &mut W, id: &str, user: u64) -> Via {
    let cmd = w.create_key(ApiKey {
        permissions: Permissions::ALL,
        ip_allowlist: vec![KEY_NET.into()],
        ..key(id, user)
    });
    w.ok(cmd);
    Via::ApiKey {
        id: id.into(),
        ip: KEY_IP.into(),
    }
}

fn set_policy(w: &mut W, security_lock_ns: u64) {
    let p = Policy {
        security_lock_ns,
        ..Policy::default()
    };
    ok_id(w, IdentityCommand::SetPolicy(p));
    assert_eq!(w.engine.identity().policy(), p);
}

// --- registration ---------------------------------------------------------------------------

#[test]
fn registration_normalises_the_email_and_refuses_duplicates_and_bad_input() {
    let mut w = W::empty();
    assert_eq!(
        ok_id(&mut w, register("  Alice@Example.COM ", PASSWORD_HASH)),
        IdentityReply::Registered(UserId(1))
    );
    assert_eq!(
        identity_events(&w),
        vec![IdentityEvent::Registered { user: UserId(1) }]
    );
    let alice = user(&w, 1);
    assert_eq!(
        (alice.email.as_str(), alice.password_hash.as_str(), alice.status),
        ("alice@example.com", PASSWORD_HASH, UserStatus::Active)
    );
    assert!(!alice.has_factor() && !alice.reenrol_required);
    assert_eq!((alice.created_ns, alice.security_locked_until_ns), (w.now_ns, 0));
    let found = w
        .engine
        .identity()
        .user_by_email("ALICE@example.com ")
        .map(|u| u.id);
    assert_eq!(found, Some(UserId(1)));

    let long = format!("{}@example.com", "a".repeat(EMAIL_LEN_MAX - 11));
    let long_hash = format!("$argon2id${}", "a".repeat(PASSWORD_HASH_LEN_MAX - 9));
    let emails = [
        ("alice@example.com", Reject::EmailTaken),
        ("ALICE@EXAMPLE.COM", Reject::EmailTaken),
        ("\talice@Example.com  ", Reject::EmailTaken),
        ("", Reject::EmailInvalid),
        ("   ", Reject::EmailInvalid),
        ("alice", Reject::EmailInvalid),
        ("alice@", Reject::EmailInvalid),
        ("@example.com", Reject::EmailInvalid),
        ("alice@example", Reject::EmailInvalid),
        ("alice@.example.com", Reject::EmailInvalid),
        ("alice@example.com.", Reject::EmailInvalid),
        ("al ice@example.com", Reject::EmailInvalid),
        ("alice@@example.com", Reject::EmailInvalid),
        ("<alice>@example.com", Reject::EmailInvalid),
        ("alice@exa,mple.com", Reject::EmailInvalid),
        ("alicé@example.com", Reject::EmailInvalid),
        (&long, Reject::EmailInvalid),
    ];
    let hashes = [
        "",
        "hunter2",
        "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "$argon2d$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "$ARGON2ID$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        "$argon2id$v=19$m=19456 t=2",
        &long_hash,
    ];
    let cases = emails
        .iter()
        .map(|&(email, want)| (email, PASSWORD_HASH, want))
        .chain(
            hashes
                .iter()
                .map(|&h| ("bob@example.com", h, Reject::PasswordHashInvalid)),
        );
    for (email, hash, want) in cases {
        assert_eq!(
            run_id(&mut w, register(email, hash)),
            Err(want),
            "{email:?} {hash:?}"
        );
    }
    // The limits themselves are accepted; ids follow registration order.
    let longest = format!("{}@example.com", "b".repeat(EMAIL_LEN_MAX - 12));
    assert_eq!(longest.len(), EMAIL_LEN_MAX);
    let r = ok_id(&mut w, register(&longest, &long_hash[..PASSWORD_HASH_LEN_MAX]));
    assert_eq!(r, IdentityReply::Registered(UserId(2)));
    let r = ok_id(&mut w, register("bob@example.com", PASSWORD_HASH));
    assert_eq!(r, IdentityReply::Registered(UserId(3)));
    assert_eq!(w.engine.identity().users().len(), 3);
}

// --- sessions -------------------------------------------------------------------------------

#[test]
fn sessions_are_opened_listed_and_closed() {
    let mut w = W::empty();
    ok_id(&mut w, register("carol@example.com", PASSWORD_HASH));
    let day = w.now_ns + DAY_NS;
    // No factor yet: a full session at once.
    let r = ok_id(
        &mut w,
        open_session(1, token(1), SessionLevel::Full, day, PASSWORD_HASH),
    );
    assert_eq!(
        r,
        IdentityReply::Session {
            user: UserId(1),
            level: SessionLevel::Full
        }
    );
    ok_id(
        &mut w,
        open_session(1, token(2), SessionLevel::Password, day, PASSWORD_HASH),
    );
    assert_eq!(
        sessions(&w, 1, w.now_ns),
        vec![(token(1), SessionLevel::Full), (token(2), SessionLevel::Password)]
    );
    let s = w.engine.identity().session(&token(1), w.now_ns).unwrap();
    assert_eq!(
        (s.user, s.expires_ns, s.device.as_str()),
        (UserId(1), day, "harness")
    );

    let at = w.now_ns + STEP_NS; // when the next command applies
    let mut bad_device = open_session(1, token(3), SessionLevel::Full, day, PASSWORD_HASH);
    if let IdentityCommand::OpenSession { device, .. } = &mut bad_device {
        *device = "phone\n".into();
    }
    let cases: Vec<(&str, IdentityCommand, Reject)> = vec![
        (
            "a token already in use",
            open_session(1, token(1), SessionLevel::Full, day, PASSWORD_HASH),
            Reject::SessionInvalid,
        ),
        (
            "expiring when opened",
            open_session(1, token(3), SessionLevel::Full, at, PASSWORD_HASH),
            Reject::SessionExpiryInvalid,
        ),
        (
            "too long",
            open_session(
                1,
                token(3),
                SessionLevel::Full,
                day + SESSION_TTL_MAX_NS,
                PASSWORD_HASH,
            ),
            Reject::SessionExpiryInvalid,
        ),
        (
            "unknown user",
            open_session(9, token(3), SessionLevel::Full, day, PASSWORD_HASH),
            Reject::UserNotFound,
        ),
        (
            "control character in the device",
            bad_device,
            Reject::LabelInvalid,
        ),
        (
            "close an unknown session",
            IdentityCommand::CloseSession { token_hash: token(9) },
            Reject::SessionInvalid,
        ),
        (
            "revoke the sessions of an unknown user",
            IdentityCommand::RevokeSessions {
                user: UserId(9),
                keep: None,
            },
            Reject::UserNotFound,
        ),
    ];
    for (name, cmd, want) in cases {
        assert_eq!(run_id(&mut w, cmd), Err(want), "{name}");
    }
    // The longest session is accepted.
    let longest = w.now_ns + STEP_NS + SESSION_TTL_MAX_NS;
    ok_id(
        &mut w,
        open_session(1, token(3), SessionLevel::Full, longest, PASSWORD_HASH),
    );

    assert_eq!(
        ok_id(&mut w, IdentityCommand::CloseSession { token_hash: token(1) }),
        IdentityReply::Done(UserId(1))
    );
    assert_eq!(
        identity_events(&w),
        vec![IdentityEvent::SessionsEnded {
            user: UserId(1),
            count: 1
        }]
    );
    assert!(w.engine.identity().session(&token(1), w.now_ns).is_none());
    refused_id(
        &mut w,
        IdentityCommand::CloseSession { token_hash: token(1) },
        Reject::SessionInvalid,
    );
    // All but one end.
    ok_id(
        &mut w,
        open_session(1, token(4), SessionLevel::Full, day, PASSWORD_HASH),
    );
    let r = ok_id(
        &mut w,
        IdentityCommand::RevokeSessions {
            user: UserId(1),
            keep: Some(token(3)),
        },
    );
    assert_eq!(
        r,
        IdentityReply::Revoked {
            sessions: 2,
            users: 1
        }
    );
    assert_eq!(sessions(&w, 1, w.now_ns), vec![(token(3), SessionLevel::Full)]);
}

#[test]
fn a_session_past_its_expiry_is_not_returned_and_cannot_withdraw() {
    let (mut w, addr) = alice_can_withdraw(0);
    log_in(&mut w, 1, token(1), token(2), &credential_of(1));
    let expires = w
        .engine
        .identity()
        .session(&token(2), w.now_ns)
        .unwrap()
        .expires_ns;
    let id = w.engine.identity();
    assert!(id.session(&token(2), expires - 1).is_some());
    assert!(id.session(&token(2), expires).is_none());
    assert!(sessions(&w, 1, expires).iter().all(|(t, _)| *t != token(2)));

    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(2)), expires - 1);
    w.run_at(expires - 1, cmd).unwrap();
    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(2)), expires);
    assert_eq!(w.run_at(expires, cmd), Err(Reject::SessionInvalid));
}

#[test]
fn the_session_cap_ends_the_oldest_session() {
    let mut w = W::empty();
    ok_id(&mut w, register("dave@example.com", PASSWORD_HASH));
    ok_id(&mut w, register("erin@example.com", PASSWORD_HASH));
    let day = w.now_ns + DAY_NS;
    ok_id(
        &mut w,
        open_session(2, token(200), SessionLevel::Full, day, PASSWORD_HASH),
    );
    let cap = SESSIONS_PER_USER_MAX as u8;
    for n in 0..cap {
        ok_id(
            &mut w,
            open_session(1, token(n), SessionLevel::Full, day, PASSWORD_HASH),
        );
    }
    assert_eq!(
        w.engine.identity().sessions_of(UserId(1), w.now_ns).len(),
        SESSIONS_PER_USER_MAX
    );
    ok_id(
        &mut w,
        open_session(1, token(cap), SessionLevel::Full, day, PASSWORD_HASH),
    );
    assert!(identity_events(&w).contains(&IdentityEvent::SessionsEnded {
        user: UserId(1),
        count: 1
    }));
    let want: Vec<_> = (1..=cap).map(|n| (token(n), SessionLevel::Full)).collect();
    assert_eq!(sessions(&w, 1, w.now_ns), want, "the oldest (token 0) ended");
    // Another user's session is not counted against the cap.
    assert!(w.engine.identity().session(&token(200), w.now_ns).is_some());
}

#[test]
fn a_session_for_a_changed_password_is_refused() {
    let mut w = W::empty();
    ok_id(&mut w, register("frank@example.com", PASSWORD_HASH));
    let day = w.now_ns + DAY_NS;
    ok_id(
        &mut w,
        open_session(1, token(1), SessionLevel::Full, day, PASSWORD_HASH),
    );
    // No factor: no proof needed; the session that asked keeps working.
    ok_id(
        &mut w,
        IdentityCommand::ChangePassword {
            user: UserId(1),
            password_hash: NEW_HASH.into(),
            proof: None,
            keep_session: Some(token(1)),
        },
    );
    assert!(identity_events(&w).contains(&IdentityEvent::PasswordChanged {
        user: UserId(1),
        by_reset: false
    }));
    // The gateway checked the old password against the old hash: too late.
    for stale in [PASSWORD_HASH, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b3RoZXI"] {
        let cmd = open_session(1, token(2), SessionLevel::Full, day, stale);
        refused_id(&mut w, cmd, Reject::CredentialsInvalid);
    }
    ok_id(
        &mut w,
        open_session(1, token(2), SessionLevel::Full, day, NEW_HASH),
    );
    assert!(w.engine.identity().session(&token(1), w.now_ns).is_some());
}

#[test]
fn a_full_session_needs_the_second_factor_and_completing_login_rotates_the_token() {
    let (mut w, addr) = alice_can_withdraw(0);
    let day = w.now_ns + DAY_NS;
    let full = open_session(1, token(1), SessionLevel::Full, day, PASSWORD_HASH);
    refused_id(&mut w, full, Reject::SecondFactorRequired);
    ok_id(
        &mut w,
        open_session(1, token(1), SessionLevel::Password, day, PASSWORD_HASH),
    );
    // Completes the password session `old` as `new`, with a proof for the login of `proof_for`.
    let complete = |w: &mut W, old: [u8; 32], new: [u8; 32], proof_for: [u8; 32]| {
        let action = Action::Login {
            user: UserId(1),
            session: proof_for,
        };
        let proof = w.passkey_proof(1, &action);
        let cmd = IdentityCommand::CompleteLogin {
            token_hash: old,
            new_token_hash: new,
            expires_ns: day,
            proof,
        };
        run_id(w, cmd)
    };
    let mismatch = complete(&mut w, token(1), token(2), token(9));
    assert_eq!(
        mismatch,
        Err(Reject::StepUpActionMismatch),
        "a proof for another login"
    );
    let full = IdentityReply::Session {
        user: UserId(1),
        level: SessionLevel::Full,
    };
    assert_eq!(complete(&mut w, token(1), token(2), token(1)), Ok(full));
    let id = w.engine.identity();
    assert!(
        id.session(&token(1), w.now_ns).is_none(),
        "the old token stopped working"
    );
    assert_eq!(id.session(&token(2), w.now_ns).unwrap().level, SessionLevel::Full);

    ok_id(
        &mut w,
        open_session(1, token(4), SessionLevel::Password, day, PASSWORD_HASH),
    );
    let cases = [
        ("the old token again", token(1), token(3)),
        ("a full session (nothing to finish)", token(2), token(3)),
        ("a new token already in use", token(4), token(2)),
    ];
    for (name, old, new) in cases {
        assert_eq!(
            complete(&mut w, old, new, old),
            Err(Reject::SessionInvalid),
            "{name}"
        );
    }
    // The rotated session may withdraw.
    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(2)), w.now_ns + STEP_NS);
    w.ok(cmd);
}

#[test]
fn a_disabled_user_cannot_open_a_session() {
    let mut w = W::new();
    let disable = IdentityCommand::SetStatus {
        user: UserId(1),
        status: UserStatus::Disabled,
        requested_by: "ops-bob".into(),
        reason: "closed at the user's request".into(),
    };
    ok_id(&mut w, disable);
    assert_eq!(user(&w, 1).status, UserStatus::Disabled);
    assert!(sessions(&w, 1, w.now_ns).is_empty());
    let day = w.now_ns + DAY_NS;
    for level in [SessionLevel::Password, SessionLevel::Full] {
        let cmd = open_session(1, token(1), level, day, PASSWORD_HASH);
        refused_id(&mut w, cmd, Reject::AccountDisabled);
    }
    let reset = IdentityCommand::IssueResetToken {
        user: UserId(1),
        token_hash: token(2),
        expires_ns: w.now_ns + HOUR_NS,
    };
    refused_id(&mut w, reset, Reject::AccountDisabled);
    // Other users are not affected.
    ok_id(
        &mut w,
        open_session(2, token(3), SessionLevel::Password, day, PASSWORD_HASH),
    );
}

// --- step-up proofs: the attack table -------------------------------------------------------

/// Builds the proof of an attack on Alice's withdrawal of 1 BTC to `addr` through her full
/// session, given the right action (`other` is her second address).
type ProofAttack = fn(&mut W, &Action, AddressId, AddressId) -> StepUp;

#[test]
fn withdrawal_attacks_are_refused_and_change_nothing() {
    let (mut w, addr) = alice_can_withdraw(0);
    let other = w.add_address(1, BTC, "bc1qalice-2", 0).id;
    let right = w.withdrawal_action(1, addr, COIN, None);
    let proofs: Vec<(&str, ProofAttack, Reject)> = vec![
        (
            "proof for another amount",
            |w, _, a, _| {
                let action = w.withdrawal_action(1, a, 2 * COIN, None);
                w.passkey_proof(1, &action)
            },
            Reject::StepUpActionMismatch,
        ),
        (
            "proof for another address",
            |w, _, _, o| {
                let action = w.withdrawal_action(1, o, COIN, None);
                w.passkey_proof(1, &action)
            },
            Reject::StepUpActionMismatch,
        ),
        (
            "proof for another client id",
            |w, _, a, _| {
                let action = w.withdrawal_action(1, a, COIN, Some(5));
                w.passkey_proof(1, &action)
            },
            Reject::StepUpActionMismatch,
        ),
        (
            "proof for a password change",
            |w, _, _, _| w.passkey_proof(1, &Action::ChangePassword { user: UserId(1) }),
            Reject::StepUpActionMismatch,
        ),
        (
            "proof as old as the freshness window",
            |w, right, _, _| {
                let fresh = w.engine.identity().policy().proof_fresh_ns;
                w.passkey_proof_at(1, right, w.now_ns + STEP_NS - fresh)
            },
            Reject::StepUpExpired,
        ),
        (
            "proof from more than a minute in the future",
            |w, right, _, _| w.passkey_proof_at(1, right, w.now_ns + STEP_NS + 60 * SECOND + 1),
            Reject::StepUpExpired,
        ),
        (
            "passkey of another user",
            |w, right, _, _| w.passkey_proof_by(1, &credential_of(2), right, w.now_ns + STEP_NS),
            Reject::FactorNotEnrolled,
        ),
        (
            "TOTP code of a user without TOTP",
            |w, right, _, _| {
                let step = step_now(w);
                w.step_up(1, right, totp(step))
            },
            Reject::FactorNotEnrolled,
        ),
        (
            "recovery code",
            |w, right, _, _| {
                let code_hash = recovery_of(1, 0);
                w.step_up(1, right, ProofFactor::Recovery { code_hash })
            },
            Reject::RecoveryNotAllowed,
        ),
        (
            "authenticator data too short for a counter",
            |w, right, _, _| {
                let mut proof = w.passkey_proof(1, right);
                if let ProofFactor::Passkey {
                    authenticator_data, ..
                } = &mut proof.factor
                {
                    authenticator_data.truncate(36);
                }
                proof
            },
            Reject::StepUpInvalid,
        ),
        (
            "no signature",
            |w, right, _, _| {
                let mut proof = w.passkey_proof(1, right);
                if let ProofFactor::Passkey { signature, .. } = &mut proof.factor {
                    signature.clear();
                }
                proof
            },
            Reject::StepUpInvalid,
        ),
    ];
    // A valid proof through the wrong door. A password session: the password was stolen, the
    // second factor was not.
    let day = w.now_ns + DAY_NS;
    ok_id(
        &mut w,
        open_session(1, token(7), SessionLevel::Password, day, PASSWORD_HASH),
    );
    let callers = [
        (
            "stolen password-level session",
            Via::Session(token(7)),
            Reject::SecondFactorRequired,
        ),
        ("session of another user", session(2), Reject::SessionInvalid),
        ("unknown session", Via::Session(token(99)), Reject::SessionInvalid),
    ];

    let (identity_before, ledger_before) = (w.engine.identity().state(), w.engine.ledger().state());
    for (name, attack, want) in proofs {
        let proof = attack(&mut w, &right, addr, other);
        let cmd = withdrawal(1, addr, COIN, None, session(1), proof);
        assert_eq!(w.run(cmd), Err(want), "{name}");
    }
    for (name, via, want) in callers {
        let cmd = w.withdraw_via(1, addr, COIN, None, via, w.now_ns + STEP_NS);
        assert_eq!(w.run(cmd), Err(want), "{name}");
    }
    assert_eq!(w.engine.identity().state(), identity_before);
    assert_eq!(w.engine.ledger().state(), ledger_before);
    assert!(w.engine.wallet().withdrawals().is_empty());
    // Freshness is exact at both ends; nothing above was used up.
    let fresh = w.engine.identity().policy().proof_fresh_ns;
    for issued_after_ns in [1 - fresh as i64, 60 * SECOND as i64] {
        let at = w.now_ns + STEP_NS;
        let proof = w.passkey_proof_at(1, &right, at.checked_add_signed(issued_after_ns).unwrap());
        w.ok(withdrawal(1, addr, COIN, None, session(1), proof));
    }
}

#[test]
fn an_accepted_withdrawal_keeps_its_proof_and_records_its_use() {
    let (mut w, addr) = alice_can_withdraw(0);
    let cmd = w.withdraw(1, addr, COIN, None);
    let Command::RequestWithdrawal { proof, .. } = &cmd else {
        unreachable!()
    };
    let proof = proof.clone();
    let x = match w.ok(cmd) {
        Reply::Withdrawal(x) => x,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (x.status, x.proof.as_ref()),
        (WithdrawalStatus::Requested, Some(&proof))
    );
    assert!(identity_events(&w).contains(&IdentityEvent::StepUpUsed {
        user: UserId(1),
        factor: "passkey".into(),
        action: w.withdrawal_action(1, addr, COIN, None).digest(),
    }));
}

#[test]
fn a_replayed_passkey_proof_is_refused_even_with_a_higher_counter() {
    let (mut w, addr) = alice_can_withdraw(0);
    let cmd = w.withdraw(1, addr, COIN, None);
    w.ok(cmd.clone());
    // The same request again would be a second withdrawal (no client id), but its challenge
    // was used.
    w.refused(cmd.clone(), Reject::StepUpReplayed);
    let Command::RequestWithdrawal { proof, .. } = cmd else {
        unreachable!()
    };
    let replay = with_counter(proof, 1_000_000);
    w.refused(
        withdrawal(1, addr, COIN, None, session(1), replay),
        Reject::StepUpReplayed,
    );
    // A new challenge for the same withdrawal is fine.
    let cmd = w.withdraw(1, addr, COIN, None);
    w.ok(cmd);
    assert_eq!(w.engine.wallet().withdrawals().len(), 2);
}

#[test]
fn a_passkey_counter_that_does_not_grow_is_refused() {
    let (mut w, addr) = alice_can_withdraw(0);
    let cmd = w.withdraw(1, addr, COIN, None);
    w.ok(cmd);
    let stored = user(&w, 1).passkey(&credential_of(1)).unwrap().sign_count;
    assert!(stored > 0);
    for count in [stored, stored - 1, 0] {
        let action = w.withdrawal_action(1, addr, COIN, None);
        let proof = with_counter(w.passkey_proof(1, &action), count);
        let cmd = withdrawal(1, addr, COIN, None, session(1), proof);
        w.refused(cmd, Reject::StepUpReplayed);
    }
    let action = w.withdrawal_action(1, addr, COIN, None);
    let proof = with_counter(w.passkey_proof(1, &action), stored + 1);
    w.ok(withdrawal(1, addr, COIN, None, session(1), proof));
    assert_eq!(
        user(&w, 1).passkey(&credential_of(1)).unwrap().sign_count,
        stored + 1
    );
}

#[test]
fn a_totp_step_is_accepted_once() {
    let mut w = W::new();
    let (u, addr) = totp_user(&mut w);
    let first = user(&w, u).last_totp_step;
    let step = first + 1;
    let cmd = totp_withdrawal(&mut w, u, addr, COIN, step);
    w.ok(cmd);
    assert_eq!(user(&w, u).last_totp_step, step);
    // The same step again, in another proof for another withdrawal; then an older step.
    for old in [step, first] {
        let cmd = totp_withdrawal(&mut w, u, addr, 2 * COIN, old);
        w.refused(cmd, Reject::StepUpReplayed);
    }
    // A step that is not current (more than one step away) is stale or from the future.
    let ahead = step_now(&w) + 2;
    let cmd = totp_withdrawal(&mut w, u, addr, 2 * COIN, ahead);
    w.refused(cmd, Reject::StepUpExpired);
    // In the next 30-second window the next step works.
    w.now_ns = (step + 1) * TOTP_STEP_NS;
    let cmd = totp_withdrawal(&mut w, u, addr, 2 * COIN, step + 1);
    w.ok(cmd);
    assert_eq!(user(&w, u).last_totp_step, step + 1);
}

#[test]
fn a_totp_code_for_another_action_or_malformed_is_refused() {
    let mut w = W::new();
    let (u, addr) = totp_user(&mut w);
    let step = user(&w, u).last_totp_step + 1;
    let action = w.withdrawal_action(u, addr, COIN, None);
    let proof = w.step_up(u, &action, totp(step));
    w.refused(
        withdrawal(u, addr, 2 * COIN, None, session(u), proof),
        Reject::StepUpActionMismatch,
    );
    let email = Action::ChangeEmail {
        user: UserId(u),
        email: "x@example.com".into(),
    };
    let proof = w.step_up(u, &email, totp(step));
    w.refused(
        withdrawal(u, addr, COIN, None, session(u), proof),
        Reject::StepUpActionMismatch,
    );
    for code in ["12345", "1234567", "12345a", ""] {
        let proof = w.step_up(
            u,
            &action,
            ProofFactor::Totp {
                step,
                code: code.into(),
            },
        );
        w.refused(
            withdrawal(u, addr, COIN, None, session(u), proof),
            Reject::StepUpInvalid,
        );
    }
    // The step was not used by any of those.
    let cmd = totp_withdrawal(&mut w, u, addr, COIN, step);
    w.ok(cmd);
}

#[test]
fn a_refused_withdrawal_uses_up_no_totp_step() {
    let mut w = W::new();
    let (u, addr) = totp_user(&mut w);
    let first = user(&w, u).last_totp_step;
    let cmd = totp_withdrawal(&mut w, u, addr, 15 * COIN, first + 1);
    w.refused(cmd.clone(), Reject::FundsInsufficient);
    assert_eq!(user(&w, u).last_totp_step, first);
    w.fund(u, BTC, 10 * COIN);
    w.ok(cmd);
    assert_eq!(user(&w, u).last_totp_step, first + 1);
}

// --- API keys -------------------------------------------------------------------------------

#[test]
fn a_withdraw_scoped_key_needs_an_allowlist_and_a_proof() {
    let mut w = W::new();
    let bare = ApiKey {
        permissions: Permissions::ALL,
        ..key("alice-withdraw-01", 1)
    };
    let create = |key: ApiKey, proof: Option<StepUp>| Command::CreateApiKey { key, proof };
    w.refused(create(bare.clone(), None), Reject::StepUpRequired);
    let cmd = w.create_key(bare.clone());
    w.refused(cmd, Reject::ApiKeyIpAllowlistRequired);
    let listed = ApiKey {
        ip_allowlist: vec![KEY_NET.into()],
        ..bare.clone()
    };
    w.refused(create(listed.clone(), None), Reject::StepUpRequired);
    // A proof for another allowlist (or of another user) is for another action.
    let wider = Action::CreateWithdrawKey {
        user: UserId(1),
        label: listed.label.clone(),
        ip_allowlist: vec!["0.0.0.0/0".into()],
    };
    let proof = w.passkey_proof(1, &wider);
    w.refused(create(listed.clone(), Some(proof)), Reject::StepUpActionMismatch);
    let theirs = w.create_key(ApiKey {
        user: UserId(2),
        ..listed.clone()
    });
    let Command::CreateApiKey { proof, .. } = theirs else {
        unreachable!()
    };
    w.refused(create(listed.clone(), proof), Reject::StepUpActionMismatch);

    let too_many: Vec<String> = (0..=IP_ALLOWLIST_MAX).map(|i| format!("10.0.0.{i}")).collect();
    let bad_lists: Vec<Vec<String>> = vec![
        vec!["203.0.113.0/33".into()],
        vec!["2001:db8::/129".into()],
        vec!["203.0.113.0/".into()],
        vec!["203.0.113.0/+8".into()],
        vec!["203.0.113".into()],
        vec!["not-an-ip".into()],
        vec![KEY_NET.into(), String::new()],
        too_many,
    ];
    for list in bad_lists {
        let cmd = w.create_key(ApiKey {
            ip_allowlist: list.clone(),
            ..bare.clone()
        });
        assert_eq!(w.run(cmd), Err(Reject::ApiKeyInvalid), "{list:?}");
    }
    let expired = w.create_key(ApiKey {
        expires_ns: Some(w.now_ns + STEP_NS),
        ..listed.clone()
    });
    w.refused(expired, Reject::ApiKeyExpired);

    let cmd = w.create_key(listed.clone());
    assert_eq!(w.ok(cmd), Reply::ApiKeyCreated);
    let used = IdentityEvent::StepUpUsed {
        user: UserId(1),
        factor: "passkey".into(),
        action: Action::CreateWithdrawKey {
            user: UserId(1),
            label: listed.label.clone(),
            ip_allowlist: listed.ip_allowlist.clone(),
        }
        .digest(),
    };
    assert!(identity_events(&w).contains(&used));
    assert!(
        w.engine
            .keys()
            .get("alice-withdraw-01")
            .unwrap()
            .permissions
            .withdraw
    );
    // A key that may not withdraw needs neither allowlist nor proof.
    w.ok(create(key("alice-trading-01", 1), None));
}

#[test]
fn key_withdrawals_come_only_from_allowlisted_addresses() {
    let (mut w, addr) = alice_can_withdraw(0);
    let allowlist = [
        "203.0.113.0/24",
        "192.0.2.0/23",
        "198.51.100.7",
        "2001:db8:abcd::/48",
    ];
    let cmd = w.create_key(ApiKey {
        permissions: Permissions::ALL,
        ip_allowlist: allowlist.iter().map(|s| s.to_string()).collect(),
        ..key("alice-withdraw-01", 1)
    });
    w.ok(cmd);
    let cases = [
        ("203.0.113.200", true),
        ("203.0.113.0", true),
        ("203.0.114.1", false),
        ("192.0.3.255", true),
        ("192.0.2.1", true),
        ("192.0.4.0", false),
        ("192.0.1.255", false),
        ("198.51.100.7", true),
        ("198.51.100.8", false),
        // IPv4-mapped IPv6 addresses are their IPv4 address.
        ("::ffff:203.0.113.9", true),
        ("::ffff:198.51.100.7", true),
        ("::ffff:203.0.114.9", false),
        ("2001:db8:abcd:12::5", true),
        ("2001:DB8:ABCD::1", true),
        ("2001:db8:abce::1", false),
        ("::1", false),
        ("127.0.0.1", false),
        ("203.0.113.9:443", false),
        ("not an ip", false),
        ("", false),
    ];
    for (ip, allowed) in cases {
        let via = Via::ApiKey {
            id: "alice-withdraw-01".into(),
            ip: ip.into(),
        };
        let cmd = w.withdraw_via(1, addr, 1_000, None, via, w.now_ns + STEP_NS);
        match w.run(cmd) {
            Ok(Reply::Withdrawal(x)) if allowed => {
                w.ok(Command::CancelWithdrawal {
                    user: UserId(1),
                    id: x.id,
                });
            }
            r => assert_eq!(r, Err(Reject::ApiKeyIpNotAllowed), "{ip}"),
        }
    }
}

#[test]
fn an_expired_key_cannot_withdraw() {
    let (mut w, addr) = alice_can_withdraw(0);
    let expires = w.now_ns + HOUR_NS;
    let cmd = w.create_key(ApiKey {
        permissions: Permissions::ALL,
        ip_allowlist: vec![KEY_NET.into()],
        expires_ns: Some(expires),
        ..key("alice-withdraw-01", 1)
    });
    w.ok(cmd);
    let via = Via::ApiKey {
        id: "alice-withdraw-01".into(),
        ip: KEY_IP.into(),
    };
    let cmd = w.withdraw_via(1, addr, COIN, None, via.clone(), expires - 1);
    w.run_at(expires - 1, cmd).unwrap();
    let cmd = w.withdraw_via(1, addr, COIN, None, via, expires);
    assert_eq!(w.run_at(expires, cmd), Err(Reject::ApiKeyExpired));
}

#[test]
fn a_key_without_the_withdraw_scope_or_of_another_user_cannot_withdraw() {
    let (mut w, addr) = alice_can_withdraw(0);
    let trading = w.create_key(key("alice-trading-01", 1));
    w.ok(trading);
    let listed = w.create_key(ApiKey {
        ip_allowlist: vec![KEY_NET.into()],
        ..key("alice-trading-02", 1)
    });
    w.ok(listed);
    let bobs = withdraw_key(&mut w, "bob-withdraw-0001", 2);
    let revoked = withdraw_key(&mut w, "alice-withdraw-09", 1);
    w.ok(Command::RevokeApiKey {
        user: UserId(1),
        id: "alice-withdraw-09".into(),
    });
    let via = |id: &str| Via::ApiKey {
        id: id.into(),
        ip: KEY_IP.into(),
    };
    let cases = [
        (
            "a trading key",
            via("alice-trading-01"),
            Reject::ApiKeyScopeMissing,
        ),
        (
            "an allowlisted trading key",
            via("alice-trading-02"),
            Reject::ApiKeyScopeMissing,
        ),
        ("another user's withdraw key", bobs, Reject::ApiKeyNotFound),
        ("a revoked key", revoked, Reject::ApiKeyNotFound),
        ("an unknown key", via("no-such-key-00001"), Reject::ApiKeyNotFound),
    ];
    for (name, via, want) in cases {
        let cmd = w.withdraw_via(1, addr, COIN, None, via, w.now_ns + STEP_NS);
        assert_eq!(w.run(cmd), Err(want), "{name}");
    }
    let ok = withdraw_key(&mut w, "alice-withdraw-01", 1);
    let cmd = w.withdraw_via(1, addr, COIN, None, ok, w.now_ns + STEP_NS);
    w.ok(cmd);
}

#[test]
fn a_key_withdrawal_to_an_address_still_cooling_is_refused() {
    let mut w = W::new();
    w.fund(1, BTC, 10 * COIN);
    let via = withdraw_key(&mut w, "alice-withdraw-01", 1);
    // The key whitelists the address itself, with the user's proof.
    let action = Action::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qbot-out".into(),
        label: "bot".into(),
    };
    let proof = w.passkey_proof(1, &action);
    let added = w.ok(Command::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qbot-out".into(),
        label: "bot".into(),
        cooling_ns: DAY_NS,
        by: AddressAuth::User {
            via: via.clone(),
            proof,
        },
    });
    let a = match added {
        Reply::WithdrawalAddress(a) => a,
        other => panic!("{other:?}"),
    };
    let cmd = w.withdraw_via(1, a.id, COIN, None, via.clone(), w.now_ns + STEP_NS);
    w.refused(cmd, Reject::WithdrawalAddressCooling);
    let cmd = w.withdraw_via(1, a.id, COIN, None, via, a.usable_at_ns);
    w.run_at(a.usable_at_ns, cmd).unwrap();
}

#[test]
fn adding_an_address_needs_the_users_proof_or_a_named_operator() {
    let mut w = W::new();
    let day = w.now_ns + DAY_NS;
    ok_id(
        &mut w,
        open_session(1, token(7), SessionLevel::Password, day, PASSWORD_HASH),
    );
    let add = |by: AddressAuth| Command::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qnew".into(),
        label: "new".into(),
        cooling_ns: DAY_NS,
        by,
    };
    let action = Action::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qnew".into(),
        label: "new".into(),
    };
    let other_label = Action::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qnew".into(),
        label: "other".into(),
    };
    let by_user = |via: Via, proof: StepUp| AddressAuth::User { via, proof };
    let ops = |name: &str, reason: &str| AddressAuth::Operator {
        name: name.into(),
        reason: reason.into(),
    };
    let at = w.now_ns + STEP_NS;
    let recovery = ProofFactor::Recovery {
        code_hash: recovery_of(1, 0),
    };
    let cases: Vec<(&str, AddressAuth, Reject)> = vec![
        (
            "proof for another label",
            by_user(session(1), w.passkey_proof(1, &other_label)),
            Reject::StepUpActionMismatch,
        ),
        (
            "password-level session",
            by_user(Via::Session(token(7)), w.passkey_proof(1, &action)),
            Reject::SecondFactorRequired,
        ),
        (
            "session of another user",
            by_user(session(2), w.passkey_proof(1, &action)),
            Reject::SessionInvalid,
        ),
        (
            "passkey of another user",
            by_user(session(1), w.passkey_proof_by(1, &credential_of(2), &action, at)),
            Reject::FactorNotEnrolled,
        ),
        (
            "recovery code",
            by_user(session(1), w.step_up(1, &action, recovery)),
            Reject::RecoveryNotAllowed,
        ),
        (
            "operator without a name",
            ops(" ", "ticket 7"),
            Reject::ReasonRequired,
        ),
        (
            "operator without a reason",
            ops("ops-carol", ""),
            Reject::ReasonRequired,
        ),
    ];
    for (name, by, want) in cases {
        assert_eq!(w.run(add(by)), Err(want), "{name}");
    }
    assert!(w.engine.wallet().withdrawal_addresses_of(UserId(1)).is_empty());
    let proof = w.passkey_proof(1, &action);
    let Reply::WithdrawalAddress(a) = w.ok(add(by_user(session(1), proof))) else {
        panic!()
    };
    assert_eq!((a.user, a.usable_at_ns), (UserId(1), w.now_ns + DAY_NS));
    assert!(identity_events(&w).contains(&IdentityEvent::StepUpUsed {
        user: UserId(1),
        factor: "passkey".into(),
        action: action.digest(),
    }));
    // An operator (named, with a reason) whitelists for user 2; the cooling still applies.
    let Reply::WithdrawalAddress(b) = w.ok(Command::AddWithdrawalAddress {
        user: UserId(2),
        asset: BTC,
        address: "bc1qbob".into(),
        label: String::new(),
        cooling_ns: DAY_NS,
        by: ops("ops-carol", "ticket 7"),
    }) else {
        panic!()
    };
    assert_eq!(b.usable_at_ns, w.now_ns + DAY_NS);
}

// --- the security-change lock ---------------------------------------------------------------

/// A security change for user 1: `setup` prepares it (and may lock: the test waits that out),
/// `change` makes it.
type Change = (&'static str, fn(&mut W), fn(&mut W) -> IdentityCommand);

/// Sets `user`'s anti-phishing code, with a passkey proof.
fn anti_phishing(w: &mut W, user: u64, code: &str) -> IdentityCommand {
    let action = Action::SetAntiPhishing {
        user: UserId(user),
        code: code.into(),
    };
    IdentityCommand::SetAntiPhishing {
        user: UserId(user),
        code: code.into(),
        proof: Some(w.passkey_proof(user, &action)),
    }
}

/// Changes `user`'s email address, with a passkey proof.
fn change_email(w: &mut W, user: u64, email: &str) -> IdentityCommand {
    let action = Action::ChangeEmail {
        user: UserId(user),
        email: email.into(),
    };
    IdentityCommand::ChangeEmail {
        user: UserId(user),
        email: email.into(),
        proof: w.passkey_proof(user, &action),
    }
}

fn enrol_totp(w: &mut W) -> IdentityCommand {
    let proof = w.passkey_proof(1, &Action::EnrolTotp { user: UserId(1) });
    IdentityCommand::EnrolTotp {
        user: UserId(1),
        sealed_secret: vec![9; 48],
        first_step: step_now(w),
        proof: Some(proof),
        recovery: Vec::new(),
    }
}

#[test]
fn security_changes_lock_withdrawals_until_the_lock_passes() {
    let nothing: fn(&mut W) = |_| {};
    let changes: Vec<Change> = vec![
        ("password change", nothing, |w| IdentityCommand::ChangePassword {
            user: UserId(1),
            password_hash: NEW_HASH.into(),
            proof: Some(w.passkey_proof(1, &Action::ChangePassword { user: UserId(1) })),
            keep_session: Some(session_of(1)),
        }),
        ("email change", nothing, |w| {
            change_email(w, 1, "alice.new@example.com")
        }),
        ("a second factor (TOTP)", nothing, enrol_totp),
        ("a second passkey", nothing, |w| {
            let action = Action::EnrolPasskey {
                user: UserId(1),
                credential_id: b"second".to_vec(),
            };
            IdentityCommand::EnrolPasskey {
                user: UserId(1),
                passkey: passkey(b"second"),
                proof: Some(w.passkey_proof(1, &action)),
                recovery: Vec::new(),
            }
        }),
        (
            "factor removal",
            |w| {
                let cmd = enrol_totp(w);
                ok_id(w, cmd);
            },
            |w| IdentityCommand::RemoveFactor {
                user: UserId(1),
                factor: FactorRef::Totp,
                proof: w.passkey_proof(1, &Action::RemoveTotp { user: UserId(1) }),
            },
        ),
        (
            "anti-phishing code changed",
            |w| {
                let cmd = anti_phishing(w, 1, "blue heron");
                ok_id(w, cmd);
            },
            |w| anti_phishing(w, 1, "red fox"),
        ),
    ];
    for (name, setup, change) in changes {
        let (mut w, addr) = alice_can_withdraw(0);
        set_policy(&mut w, HOUR_NS);
        setup(&mut w);
        w.now_ns += HOUR_NS;
        w.request(1, addr, 1_000, None)
            .unwrap_or_else(|e| panic!("{name}: before: {e:?}"));
        let cmd = change(&mut w);
        ok_id(&mut w, cmd);
        let until = w.now_ns + HOUR_NS;
        assert_eq!(user(&w, 1).security_locked_until_ns, until, "{name}");
        assert!(
            identity_events(&w).contains(&IdentityEvent::SecurityLocked {
                user: UserId(1),
                until_ns: until
            }),
            "{name}"
        );
        assert_eq!(
            w.request(1, addr, 1_000, None),
            Err(Reject::SecurityLocked),
            "{name}"
        );
        let cmd = w.withdraw_at(1, addr, 1_000, None, until - 1);
        assert_eq!(w.run_at(until - 1, cmd), Err(Reject::SecurityLocked), "{name}");
        let cmd = w.withdraw_at(1, addr, 1_000, None, until);
        assert!(w.run_at(until, cmd).is_ok(), "{name}: after the lock");
        // Other users were never locked.
        assert_eq!(user(&w, 2).security_locked_until_ns, 0, "{name}");
    }
}

#[test]
fn the_first_factor_and_the_first_anti_phishing_code_do_not_lock() {
    let (mut w, addr) = alice_can_withdraw(0);
    for u in 1..=USERS {
        assert_eq!(
            user(&w, u).security_locked_until_ns,
            0,
            "user {u}'s first passkey"
        );
    }
    let set = |code: &str, proof: Option<StepUp>| IdentityCommand::SetAntiPhishing {
        user: UserId(1),
        code: code.into(),
        proof,
    };
    refused_id(&mut w, set("blue heron", None), Reject::StepUpRequired);
    for bad in ["abc", " blue", "blue ", "a<b>cd", &"x".repeat(33), "tab\there"] {
        refused_id(&mut w, set(bad, None), Reject::AntiPhishingInvalid);
    }
    let cmd = anti_phishing(&mut w, 1, "blue heron");
    ok_id(&mut w, cmd);
    let alice = user(&w, 1);
    assert_eq!(
        (
            alice.anti_phishing.as_deref(),
            alice.anti_phishing_set_ns,
            alice.security_locked_until_ns
        ),
        (Some("blue heron"), w.now_ns, 0)
    );
    w.request(1, addr, COIN, None).unwrap();
    // A policy out of range is refused.
    for p in [
        Policy {
            proof_fresh_ns: 0,
            ..Policy::default()
        },
        Policy {
            proof_fresh_ns: HOUR_NS + 1,
            ..Policy::default()
        },
        Policy {
            security_lock_ns: 30 * DAY_NS + 1,
            ..Policy::default()
        },
    ] {
        refused_id(&mut w, IdentityCommand::SetPolicy(p), Reject::LimitExceeded);
    }
}

/// A first factor protects a new, empty account and locks nothing, so a new user can start;
/// on an account that already holds funds it locks withdrawals as a password change does, or a
/// password stolen before the user enrolled a factor would be enough to enrol one and withdraw.
#[test]
fn a_first_factor_locks_withdrawals_only_when_the_account_holds_funds() {
    type Holdings = fn(&mut W, u64);
    let cases: [(&str, Holdings, bool, bool); 7] = [
        // (name, what the user holds before, TOTP rather than a passkey first, locked)
        ("nothing, first passkey", |_, _| {}, false, false),
        ("nothing, first TOTP", |_, _| {}, true, false),
        (
            "a deposit address and an empty account",
            |w, u| {
                w.assign(u, BTC, "dep-empty").unwrap();
                w.ok(Command::OpenAccount {
                    user: UserId(u),
                    asset: ETH,
                });
            },
            false,
            false,
        ),
        // Seen, not yet confirmed: held, but the user's within minutes, so it counts.
        (
            "a deposit seen but not confirmed",
            |w, u| {
                w.assign(u, BTC, "dep-pending").unwrap();
                w.seen(BTC, "dep-pending", "pending-tx", 0, COIN).unwrap();
            },
            true,
            true,
        ),
        (
            "one satoshi, first passkey",
            |w, u| w.fund(u, BTC, 1),
            false,
            true,
        ),
        ("BTC, first TOTP", |w, u| w.fund(u, BTC, COIN), true, true),
        (
            "ETH only, first passkey",
            |w, u| w.fund(u, ETH, 5_000),
            false,
            true,
        ),
    ];
    for (name, holdings, totp_first, locked) in cases {
        let mut w = W::new();
        set_policy(&mut w, HOUR_NS);
        let u = USERS + 1;
        ok_id(&mut w, register(&format!("user{u}@example.com"), PASSWORD_HASH));
        let expires = w.now_ns + DAY_NS;
        ok_id(
            &mut w,
            open_session(u, session_of(u), SessionLevel::Full, expires, PASSWORD_HASH),
        );
        holdings(&mut w, u);
        let enrol = if totp_first {
            IdentityCommand::EnrolTotp {
                user: UserId(u),
                sealed_secret: vec![9; 48],
                first_step: step_now(&w),
                proof: None,
                recovery: vec![recovery_of(u, 0)],
            }
        } else {
            IdentityCommand::EnrolPasskey {
                user: UserId(u),
                passkey: passkey(&credential_of(u)),
                proof: None,
                recovery: vec![recovery_of(u, 0)],
            }
        };
        ok_id(&mut w, enrol);
        let until = w.now_ns + HOUR_NS;
        assert_eq!(
            user(&w, u).security_locked_until_ns,
            if locked { until } else { 0 },
            "{name}"
        );
        let lock_event = IdentityEvent::SecurityLocked {
            user: UserId(u),
            until_ns: until,
        };
        assert_eq!(identity_events(&w).contains(&lock_event), locked, "{name}");
        if locked && !totp_first {
            // The lock is what a withdrawal meets, until it passes.
            let asset = if w.customer(u, BTC).is_some() { BTC } else { ETH };
            let addr = w.add_address(u, asset, "bc1qfirst-out", 0).id;
            assert_eq!(w.request(u, addr, 1, None), Err(Reject::SecurityLocked), "{name}");
            let cmd = w.withdraw_at(u, addr, 1, None, until);
            assert!(w.run_at(until, cmd).is_ok(), "{name}: after the lock");
        }
    }
}

// --- password reset -------------------------------------------------------------------------

#[test]
fn a_password_reset_ends_sessions_keeps_factors_and_locks_withdrawals() {
    let (mut w, addr) = alice_can_withdraw(0);
    let before = user(&w, 1);
    let issue = IdentityCommand::IssueResetToken {
        user: UserId(1),
        token_hash: token(50),
        expires_ns: w.now_ns + HOUR_NS / 2,
    };
    ok_id(&mut w, issue);
    assert_eq!(
        identity_events(&w),
        vec![IdentityEvent::ResetRequested { user: UserId(1) }]
    );
    let reset = |password_hash: &str| IdentityCommand::ResetPassword {
        token_hash: token(50),
        password_hash: password_hash.into(),
    };
    // A bad hash does not use the token up.
    refused_id(&mut w, reset("plaintext"), Reject::PasswordHashInvalid);
    ok_id(&mut w, reset(NEW_HASH));
    let until = w.now_ns + w.engine.identity().policy().security_lock_ns;
    assert_eq!(
        identity_events(&w),
        vec![
            IdentityEvent::PasswordChanged {
                user: UserId(1),
                by_reset: true
            },
            IdentityEvent::SessionsEnded {
                user: UserId(1),
                count: 1
            },
            IdentityEvent::SecurityLocked {
                user: UserId(1),
                until_ns: until
            },
        ]
    );
    let after = user(&w, 1);
    assert!(sessions(&w, 1, w.now_ns).is_empty());
    assert_eq!(
        (after.passkeys, after.recovery),
        (before.passkeys, before.recovery)
    );
    assert_eq!(after.security_locked_until_ns, until);
    // The token is single-use.
    refused_id(&mut w, reset(PASSWORD_HASH), Reject::TokenInvalid);

    // A reset does not skip the second factor: a full session is still refused.
    let day = w.now_ns + DAY_NS;
    let full = open_session(1, token(51), SessionLevel::Full, day, NEW_HASH);
    refused_id(&mut w, full, Reject::SecondFactorRequired);
    let old = open_session(1, token(51), SessionLevel::Password, day, PASSWORD_HASH);
    refused_id(&mut w, old, Reject::CredentialsInvalid);
    ok_id(
        &mut w,
        open_session(1, token(51), SessionLevel::Password, day, NEW_HASH),
    );
    let proof = w.passkey_proof(
        1,
        &Action::Login {
            user: UserId(1),
            session: token(51),
        },
    );
    ok_id(
        &mut w,
        IdentityCommand::CompleteLogin {
            token_hash: token(51),
            new_token_hash: token(52),
            expires_ns: day,
            proof,
        },
    );
    // Logged in again, but withdrawals wait out the lock.
    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(52)), w.now_ns + STEP_NS);
    w.refused(cmd, Reject::SecurityLocked);
    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(52)), until);
    w.run_at(until, cmd).unwrap();
}

#[test]
fn reset_tokens_expire_are_capped_and_single_use() {
    let mut w = W::new();
    let issue = |user: u64, n: u8, expires_ns: u64| IdentityCommand::IssueResetToken {
        user: UserId(user),
        token_hash: token(n),
        expires_ns,
    };
    let reset = |n: u8| IdentityCommand::ResetPassword {
        token_hash: token(n),
        password_hash: NEW_HASH.into(),
    };
    // Expiring when issued, or later than allowed.
    for after_ns in [0, HOUR_NS + 1] {
        let expires = w.now_ns + STEP_NS + after_ns;
        refused_id(&mut w, issue(1, 60, expires), Reject::SessionExpiryInvalid);
    }
    let expires = w.now_ns + STEP_NS + HOUR_NS;
    refused_id(&mut w, issue(9, 60, expires), Reject::UserNotFound);
    refused_id(&mut w, reset(60), Reject::TokenInvalid);

    // Expiring: not usable at its expiry.
    let expires = w.now_ns + 10 * 60 * SECOND;
    ok_id(&mut w, issue(1, 60, expires));
    let cmd = Command::Identity(reset(60));
    assert_eq!(w.run_at(expires, cmd), Err(Reject::TokenInvalid));

    // At most RESET_TOKENS_PER_USER_MAX per user: a newer one replaces the oldest.
    let first = 61;
    let last = first + RESET_TOKENS_PER_USER_MAX as u8;
    for n in first..=last {
        let expires = w.now_ns + HOUR_NS;
        ok_id(&mut w, issue(1, n, expires));
    }
    let expires = w.now_ns + HOUR_NS;
    ok_id(&mut w, issue(2, 90, expires));
    refused_id(&mut w, reset(first), Reject::TokenInvalid);
    // One reset ends every token of that user, not of others.
    ok_id(&mut w, reset(first + 1));
    for n in first + 2..=last {
        refused_id(&mut w, reset(n), Reject::TokenInvalid);
    }
    ok_id(&mut w, reset(90));
    assert_eq!(user(&w, 2).password_hash, NEW_HASH);
}

// --- freeze ---------------------------------------------------------------------------------

#[test]
fn a_freeze_ends_sessions_and_halts_withdrawals_until_an_operator_reinstates() {
    let (mut w, addr) = alice_can_withdraw(0);
    let key_via = withdraw_key(&mut w, "alice-withdraw-01", 1);
    let freeze = |reason: &str| IdentityCommand::Freeze {
        user: UserId(1),
        reason: reason.into(),
    };
    refused_id(&mut w, freeze("bell\u{7}"), Reject::LabelInvalid);
    ok_id(&mut w, freeze("freeze link in the new-device email"));
    assert_eq!(
        identity_events(&w),
        vec![
            IdentityEvent::StatusChanged {
                user: UserId(1),
                status: UserStatus::Frozen,
                reason: "freeze link in the new-device email".into()
            },
            IdentityEvent::SessionsEnded {
                user: UserId(1),
                count: 1
            },
        ]
    );
    assert_eq!(user(&w, 1).status, UserStatus::Frozen);
    assert!(sessions(&w, 1, w.now_ns).is_empty());
    // The freeze ended the user's API keys in the same command.
    assert!(w.engine.keys().of_user(UserId(1)).is_empty());
    let cmd = w.withdraw_via(1, addr, COIN, None, key_via.clone(), w.now_ns + STEP_NS);
    w.refused(cmd, Reject::ApiKeyNotFound);
    // A frozen user may still sign in and look, but neither withdraw nor change credentials.
    log_in(&mut w, 1, token(1), token(2), &credential_of(1));
    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(2)), w.now_ns + STEP_NS);
    w.refused(cmd, Reject::AccountFrozen);
    let proof = w.passkey_proof(1, &Action::ChangePassword { user: UserId(1) });
    let change = IdentityCommand::ChangePassword {
        user: UserId(1),
        password_hash: NEW_HASH.into(),
        proof: Some(proof),
        keep_session: None,
    };
    refused_id(&mut w, change, Reject::AccountFrozen);

    let status = |by: &str, reason: &str, user: u64| IdentityCommand::SetStatus {
        user: UserId(user),
        status: UserStatus::Active,
        requested_by: by.into(),
        reason: reason.into(),
    };
    refused_id(&mut w, status("", "verified by phone", 1), Reject::ReasonRequired);
    refused_id(&mut w, status("ops-dan", "  ", 1), Reject::ReasonRequired);
    refused_id(
        &mut w,
        status("ops-dan", "verified by phone", 9),
        Reject::UserNotFound,
    );
    ok_id(&mut w, status("ops-dan", "verified by phone", 1));
    let alice = user(&w, 1);
    assert_eq!(
        (alice.status, alice.status_reason.as_deref()),
        (UserStatus::Active, Some("ops-dan: verified by phone"))
    );
    // Reinstated: the session withdraws; the ended key stays ended.
    let cmd = w.withdraw_via(1, addr, COIN, None, key_via, w.now_ns + STEP_NS);
    w.refused(cmd, Reject::ApiKeyNotFound);
    let cmd = w.withdraw_via(1, addr, COIN, None, Via::Session(token(2)), w.now_ns + STEP_NS);
    w.ok(cmd);
}

// --- platform-wide revocation ---------------------------------------------------------------

#[test]
fn revoking_everything_ends_sessions_and_factors_until_reenrolment() {
    let (mut w, addr) = alice_can_withdraw(0);
    let (totp_u, _) = totp_user(&mut w);
    ok_id(&mut w, register("nofactor@example.com", PASSWORD_HASH));
    let plain = totp_u + 1;
    let day = w.now_ns + DAY_NS;
    ok_id(
        &mut w,
        open_session(plain, token(5), SessionLevel::Full, day, PASSWORD_HASH),
    );
    let revoke = |by: &str| IdentityCommand::RevokeEverything {
        requested_by: by.into(),
        reason: "session store leaked".into(),
    };
    refused_id(&mut w, revoke(" "), Reject::ReasonRequired);
    assert_eq!(
        ok_id(&mut w, revoke("ciso")),
        IdentityReply::Revoked {
            sessions: plain as usize,
            users: totp_u as usize
        }
    );
    let until = w.now_ns + w.engine.identity().policy().security_lock_ns;
    for u in 1..=totp_u {
        let x = user(&w, u);
        assert!(!x.has_factor() && x.reenrol_required, "user {u}");
        assert_eq!(x.security_locked_until_ns, until, "user {u}");
    }
    let p = user(&w, plain);
    assert!(!p.reenrol_required && p.security_locked_until_ns == 0);
    for u in 1..=plain {
        assert!(sessions(&w, u, w.now_ns).is_empty());
    }

    // Logging in: no full session, and a password session cannot finish with the old passkey.
    let full = open_session(1, token(10), SessionLevel::Full, day, PASSWORD_HASH);
    refused_id(&mut w, full, Reject::SecondFactorRequired);
    ok_id(
        &mut w,
        open_session(1, token(10), SessionLevel::Password, day, PASSWORD_HASH),
    );
    let login = Action::Login {
        user: UserId(1),
        session: token(10),
    };
    let proof = w.passkey_proof(1, &login);
    let complete = IdentityCommand::CompleteLogin {
        token_hash: token(10),
        new_token_hash: token(11),
        expires_ns: day,
        proof,
    };
    refused_id(&mut w, complete, Reject::ReenrolmentRequired);
    // Any proof but a recovery code.
    let email = |u: u64| Action::ChangeEmail {
        user: UserId(u),
        email: format!("new{u}@example.com"),
    };
    let proof = w.passkey_proof(1, &email(1));
    let cmd = IdentityCommand::ChangeEmail {
        user: UserId(1),
        email: "new1@example.com".into(),
        proof,
    };
    refused_id(&mut w, cmd, Reject::ReenrolmentRequired);
    let step = user(&w, totp_u).last_totp_step + 1;
    let proof = w.step_up(totp_u, &email(totp_u), totp(step));
    let cmd = IdentityCommand::ChangeEmail {
        user: UserId(totp_u),
        email: format!("new{totp_u}@example.com"),
        proof,
    };
    refused_id(&mut w, cmd, Reject::ReenrolmentRequired);
    let cmd = w.create_key(ApiKey {
        permissions: Permissions::ALL,
        ip_allowlist: vec![KEY_NET.into()],
        ..key("alice-withdraw-01", 1)
    });
    w.refused(cmd, Reject::ReenrolmentRequired);
    let action = Action::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qthief".into(),
        label: String::new(),
    };
    let proof = w.passkey_proof(1, &action);
    let by = AddressAuth::User {
        via: Via::Session(token(10)),
        proof,
    };
    let cmd = Command::AddWithdrawalAddress {
        user: UserId(1),
        asset: BTC,
        address: "bc1qthief".into(),
        label: String::new(),
        cooling_ns: 0,
        by,
    };
    w.refused(cmd, Reject::SecondFactorRequired);

    // Re-enrolment: only with a recovery code.
    let new_key = b"new-passkey-1".to_vec();
    let enrol = |proof: Option<StepUp>| IdentityCommand::EnrolPasskey {
        user: UserId(1),
        passkey: passkey(b"new-passkey-1"),
        proof,
        recovery: Vec::new(),
    };
    let action = Action::EnrolPasskey {
        user: UserId(1),
        credential_id: new_key.clone(),
    };
    refused_id(&mut w, enrol(None), Reject::StepUpRequired);
    let proof = w.passkey_proof(1, &action);
    refused_id(&mut w, enrol(Some(proof)), Reject::ReenrolmentRequired);
    let code = ProofFactor::Recovery {
        code_hash: recovery_of(1, 0),
    };
    let wrong = ProofFactor::Recovery {
        code_hash: [0xaa; 32],
    };
    let proof = w.step_up(1, &action, wrong);
    refused_id(&mut w, enrol(Some(proof)), Reject::RecoveryCodeInvalid);
    let proof = w.step_up(1, &action, code.clone());
    ok_id(&mut w, enrol(Some(proof)));
    let events = identity_events(&w);
    assert!(events.contains(&IdentityEvent::RecoveryCodeUsed { user: UserId(1) }));
    assert!(events.contains(&IdentityEvent::FactorEnrolled {
        user: UserId(1),
        factor: "passkey".into()
    }));
    let alice = user(&w, 1);
    assert!(!alice.reenrol_required);
    assert_eq!(alice.passkeys.len(), 1);
    assert_eq!(alice.passkeys[0].credential_id, new_key);
    assert_eq!(alice.recovery_left(), 1);
    assert!(alice.recovery[0].used);
    // The recovery code is single-use.
    let proof = w.step_up(1, &Action::EnrolTotp { user: UserId(1) }, code);
    let again = IdentityCommand::EnrolTotp {
        user: UserId(1),
        sealed_secret: vec![9; 48],
        first_step: step_now(&w),
        proof: Some(proof),
        recovery: Vec::new(),
    };
    refused_id(&mut w, again, Reject::RecoveryCodeInvalid);
    // The password session finishes with the new passkey; withdrawals wait out the lock.
    // Re-enrolment is a new factor: it starts a lock of its own.
    let unlock = alice.security_locked_until_ns;
    assert!(unlock > until);
    let proof = w.passkey_proof_by(1, &new_key, &login, w.now_ns + STEP_NS);
    let complete = IdentityCommand::CompleteLogin {
        token_hash: token(10),
        new_token_hash: token(11),
        expires_ns: w.now_ns + 2 * DAY_NS,
        proof,
    };
    ok_id(&mut w, complete);
    let action = w.withdrawal_action(1, addr, COIN, None);
    let proof = w.passkey_proof_by(1, &new_key, &action, unlock - 1);
    let cmd = withdrawal(1, addr, COIN, None, Via::Session(token(11)), proof);
    assert_eq!(w.run_at(unlock - 1, cmd), Err(Reject::SecurityLocked));
    let proof = w.passkey_proof_by(1, &new_key, &action, unlock);
    let cmd = withdrawal(1, addr, COIN, None, Via::Session(token(11)), proof);
    assert!(w.run_at(unlock, cmd).is_ok());
}

// --- audit ----------------------------------------------------------------------------------

#[test]
fn authentication_failures_are_recorded_as_events() {
    let mut w = W::new();
    let failed = |user: Option<u64>, reason: &str| IdentityCommand::AuthFailed {
        user: user.map(UserId),
        ip: "198.51.100.66".into(),
        reason: reason.into(),
    };
    let users_before = w.engine.identity().users().to_vec();
    assert_eq!(
        ok_id(&mut w, failed(Some(1), "wrong password")),
        IdentityReply::Done(UserId(1))
    );
    assert_eq!(
        identity_events(&w),
        vec![IdentityEvent::AuthFailed {
            user: Some(UserId(1)),
            ip: "198.51.100.66".into(),
            reason: "wrong password".into()
        }]
    );
    ok_id(&mut w, failed(None, "unknown email"));
    assert_eq!(identity_events(&w).len(), 1);
    refused_id(&mut w, failed(Some(9), "wrong password"), Reject::UserNotFound);
    refused_id(&mut w, failed(Some(1), "line\nbreak"), Reject::LabelInvalid);
    assert_eq!(w.engine.identity().users(), users_before.as_slice());
}

// --- replay and snapshots -------------------------------------------------------------------

/// Identity traffic for users 1 to 5 (1 to 3 ready, 4 and 5 registered by the ops).
#[derive(Clone, Debug)]
enum Op {
    Register { n: u8 },
    OpenPassword { user: u64, t: u8 },
    CompleteLogin { t: u8 },
    Close { t: u8 },
    EnrolTotp { user: u64 },
    EnrolPasskey { user: u64, n: u8 },
    RemoveTotp { user: u64 },
    ChangePassword { user: u64, keep: bool },
    ChangeEmail { user: u64, n: u8 },
    AntiPhishing { user: u64, n: u8 },
    IssueReset { user: u64, t: u8 },
    Reset { t: u8 },
    Freeze { user: u64 },
    Reinstate { user: u64 },
    RevokeEverything,
    Recover { user: u64, code: u8 },
    AuthFailed { user: u64 },
    Policy { lock_minutes: u64 },
    Withdraw { user: u64, amount: u128 },
    Wait { seconds: u64 },
    Language { user: u64, ja: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let u = || 1u64..=5;
    prop_oneof![
        1 => (0u8..4).prop_map(|n| Op::Register { n }),
        3 => (u(), 0u8..6).prop_map(|(user, t)| Op::OpenPassword { user, t }),
        3 => (0u8..6).prop_map(|t| Op::CompleteLogin { t }),
        1 => (0u8..6).prop_map(|t| Op::Close { t }),
        2 => u().prop_map(|user| Op::EnrolTotp { user }),
        1 => (u(), 0u8..3).prop_map(|(user, n)| Op::EnrolPasskey { user, n }),
        1 => u().prop_map(|user| Op::RemoveTotp { user }),
        1 => (u(), any::<bool>()).prop_map(|(user, keep)| Op::ChangePassword { user, keep }),
        1 => (u(), 0u8..3).prop_map(|(user, n)| Op::ChangeEmail { user, n }),
        1 => (u(), 0u8..3).prop_map(|(user, n)| Op::AntiPhishing { user, n }),
        1 => (u(), 0u8..4).prop_map(|(user, t)| Op::IssueReset { user, t }),
        1 => (0u8..4).prop_map(|t| Op::Reset { t }),
        1 => u().prop_map(|user| Op::Freeze { user }),
        1 => u().prop_map(|user| Op::Reinstate { user }),
        1 => Just(Op::RevokeEverything),
        1 => (u(), 0u8..2).prop_map(|(user, code)| Op::Recover { user, code }),
        1 => u().prop_map(|user| Op::AuthFailed { user }),
        1 => (0u64..120).prop_map(|lock_minutes| Op::Policy { lock_minutes }),
        4 => (u(), 1u128..2_000).prop_map(|(user, amount)| Op::Withdraw { user, amount }),
        2 => (1u64..4_000).prop_map(|seconds| Op::Wait { seconds }),
        1 => (1u64..=6, any::<bool>()).prop_map(|(user, ja)| Op::Language { user, ja }),
    ]
}

/// Session tokens of the ops: `t` names one of a few per user.
fn op_token(user: u64, t: u8) -> [u8; 32] {
    let mut h = [t; 32];
    h[0] = user as u8;
    h
}

/// The password sessions and reset tokens the ops made, as (user, t): later ops pick from them.
#[derive(Default)]
struct Made {
    sessions: Vec<(u64, u8)>,
    resets: Vec<(u64, u8)>,
}

fn pick(made: &[(u64, u8)], n: u8) -> (u64, u8) {
    made.get(n as usize % made.len().max(1))
        .copied()
        .unwrap_or((1, n))
}

fn identity_command(w: &mut W, op: &Op, made: &mut Made) -> Command {
    let id = |c: IdentityCommand| Command::Identity(c);
    let day = w.now_ns + DAY_NS;
    match *op {
        Op::Register { n } => id(register(&format!("op{n}@example.com"), PASSWORD_HASH)),
        Op::OpenPassword { user, t } => {
            made.sessions.push((user, t));
            id(open_session(
                user,
                op_token(user, t),
                SessionLevel::Password,
                day,
                PASSWORD_HASH,
            ))
        }
        Op::CompleteLogin { t } => {
            let (user, t) = pick(&made.sessions, t);
            let old = op_token(user, t);
            // Into the harness's session when that ended (so withdrawals resume), else aside.
            let harness_live = w.engine.identity().session(&session_of(user), w.now_ns).is_some();
            let new = if harness_live {
                op_token(user, 50 + t)
            } else {
                session_of(user)
            };
            let action = Action::Login {
                user: UserId(user),
                session: old,
            };
            id(IdentityCommand::CompleteLogin {
                token_hash: old,
                new_token_hash: new,
                expires_ns: day,
                proof: w.passkey_proof(user, &action),
            })
        }
        Op::Close { t } => {
            let (user, t) = pick(&made.sessions, t);
            id(IdentityCommand::CloseSession {
                token_hash: op_token(user, t),
            })
        }
        Op::EnrolTotp { user } => {
            let proof = w.passkey_proof(user, &Action::EnrolTotp { user: UserId(user) });
            id(IdentityCommand::EnrolTotp {
                user: UserId(user),
                sealed_secret: vec![user as u8; 40],
                first_step: step_now(w),
                proof: Some(proof),
                recovery: Vec::new(),
            })
        }
        Op::EnrolPasskey { user, n } => {
            let credential = format!("op-passkey-{user}-{n}").into_bytes();
            let action = Action::EnrolPasskey {
                user: UserId(user),
                credential_id: credential.clone(),
            };
            id(IdentityCommand::EnrolPasskey {
                user: UserId(user),
                passkey: passkey(&credential),
                proof: Some(w.passkey_proof(user, &action)),
                recovery: Vec::new(),
            })
        }
        Op::RemoveTotp { user } => id(IdentityCommand::RemoveFactor {
            user: UserId(user),
            factor: FactorRef::Totp,
            proof: w.passkey_proof(user, &Action::RemoveTotp { user: UserId(user) }),
        }),
        Op::ChangePassword { user, keep } => id(IdentityCommand::ChangePassword {
            user: UserId(user),
            password_hash: PASSWORD_HASH.into(),
            proof: Some(w.passkey_proof(user, &Action::ChangePassword { user: UserId(user) })),
            keep_session: keep.then(|| session_of(user)),
        }),
        Op::ChangeEmail { user, n } => id(change_email(w, user, &format!("moved{n}@example.com"))),
        Op::AntiPhishing { user, n } => id(anti_phishing(w, user, &format!("code {n}"))),
        Op::IssueReset { user, t } => {
            made.resets.push((user, t));
            id(IdentityCommand::IssueResetToken {
                user: UserId(user),
                token_hash: op_token(user, 100 + t),
                expires_ns: w.now_ns + HOUR_NS / 2,
            })
        }
        Op::Reset { t } => {
            let (user, t) = pick(&made.resets, t);
            id(IdentityCommand::ResetPassword {
                token_hash: op_token(user, 100 + t),
                password_hash: PASSWORD_HASH.into(),
            })
        }
        Op::Freeze { user } => id(IdentityCommand::Freeze {
            user: UserId(user),
            reason: "freeze link".into(),
        }),
        Op::Reinstate { user } => id(IdentityCommand::SetStatus {
            user: UserId(user),
            status: UserStatus::Active,
            requested_by: "ops".into(),
            reason: "reviewed".into(),
        }),
        Op::RevokeEverything => id(IdentityCommand::RevokeEverything {
            requested_by: "ciso".into(),
            reason: "drill".into(),
        }),
        Op::Recover { user, code } => {
            let credential = format!("recovered-{user}-{}", w.seq).into_bytes();
            let action = Action::EnrolPasskey {
                user: UserId(user),
                credential_id: credential.clone(),
            };
            let code_hash = recovery_of(user, code);
            id(IdentityCommand::EnrolPasskey {
                user: UserId(user),
                passkey: passkey(&credential),
                proof: Some(w.step_up(user, &action, ProofFactor::Recovery { code_hash })),
                recovery: Vec::new(),
            })
        }
        Op::AuthFailed { user } => id(IdentityCommand::AuthFailed {
            user: Some(UserId(user)),
            ip: "198.51.100.66".into(),
            reason: "wrong password".into(),
        }),
        Op::Policy { lock_minutes } => id(IdentityCommand::SetPolicy(Policy {
            security_lock_ns: lock_minutes * 60 * SECOND,
            ..Policy::default()
        })),
        Op::Withdraw { user, amount } => w.withdraw(user, AddressId(user.min(USERS)), amount, None),
        Op::Wait { seconds } => {
            w.now_ns += seconds * SECOND;
            Command::Tick
        }
        Op::Language { user, ja } => id(IdentityCommand::SetLanguage {
            user: UserId(user),
            language: if ja { Language::Ja } else { Language::En },
        }),
    }
}

fn run_identity_ops(ops: &[Op]) -> W {
    let mut w = W::new();
    for u in 1..=USERS {
        w.fund(u, BTC, COIN);
        let a = w.add_address(u, BTC, &format!("out-{u}"), 0);
        assert_eq!(a.id, AddressId(u));
    }
    let mut made = Made::default();
    for op in ops {
        let cmd = identity_command(&mut w, op, &mut made);
        // `run` audits, reconciles and checks that a refusal changed nothing.
        let _ = w.run(cmd);
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn identity_traffic_replays_and_restores_exactly(ops in proptest::collection::vec(op(), 1..100)) {
        let w = run_identity_ops(&ops);
        let live = w.engine.state_hash();
        assert_replays_to(&w.log, live);
        let restored = Engine::from_snapshot_bytes(&w.engine.snapshot_bytes()).unwrap();
        prop_assert_eq!(restored.state_hash(), live);
        let (a, b) = (w.engine.identity(), restored.identity());
        prop_assert_eq!(a.state(), b.state());
        // The rebuilt email index answers the same.
        for u in a.users() {
            prop_assert_eq!(b.user_by_email(&u.email).map(|x| x.id), Some(u.id));
        }
    }
}

/// The withdrawal command with its passkey counter set to 0 (as synced passkeys send).
fn zero_counter(cmd: Command) -> Command {
    match cmd {
        Command::RequestWithdrawal {
            user,
            address,
            amount,
            client_id,
            via,
            proof,
        } => Command::RequestWithdrawal {
            user,
            address,
            amount,
            client_id,
            via,
            proof: with_counter(proof, 0),
        },
        other => panic!("not a withdrawal: {other:?}"),
    }
}

#[test]
fn raising_the_freshness_window_does_not_revive_a_used_proof() {
    const MINUTE: u64 = 60 * 1_000_000_000;
    let (mut w, addr) = alice_can_withdraw(0);
    // Counter 0 throughout: only the record of used challenges stops a replay.
    let first = zero_counter(w.withdraw(1, addr, COIN, None));
    w.ok(first.clone());
    // Seven minutes on (past the default five-minute window) another proof is used, which
    // prunes the records that can no longer matter.
    let later = w.now_ns + 7 * MINUTE;
    let second = zero_counter(w.withdraw_at(1, addr, COIN, None, later));
    w.run_at(later, second).unwrap();
    ok_id(
        &mut w,
        IdentityCommand::SetPolicy(Policy {
            proof_fresh_ns: 60 * MINUTE,
            ..Policy::default()
        }),
    );
    // The first proof is inside the new window, but it was used.
    let again = w.now_ns + MINUTE;
    assert_eq!(w.run_at(again, first), Err(Reject::StepUpReplayed));
    assert_eq!(w.engine.wallet().withdrawals().len(), 2);
}

// --- API keys and sessions against a stolen session ------------------------------------------

#[test]
fn revoking_a_key_or_other_sessions_takes_a_proof_of_exactly_that_and_a_password_change_ends_keys() {
    let (mut w, _) = alice_can_withdraw(0);
    withdraw_key(&mut w, "alice-withdraw-01", 1);
    withdraw_key(&mut w, "alice-withdraw-02", 1);
    let revoke = |w: &mut W, id: &str, proof_for: &str| {
        let proof = w.passkey_proof(
            1,
            &Action::RevokeApiKey {
                user: UserId(1),
                id: proof_for.into(),
            },
        );
        Command::RevokeApiKeyWithProof {
            user: UserId(1),
            id: id.into(),
            proof,
        }
    };
    let cmd = revoke(&mut w, "alice-withdraw-01", "alice-withdraw-02");
    w.refused(cmd, Reject::StepUpActionMismatch);
    let cmd = revoke(&mut w, "alice-withdraw-01", "alice-withdraw-01");
    w.ok(cmd);
    assert!(w.engine.keys().get("alice-withdraw-01").is_none());

    // A second session; ending it needs a proof bound to it (not to "all the others").
    log_in(&mut w, 1, token(3), token(4), &credential_of(1));
    let end = |w: &mut W, session: Option<[u8; 32]>, proof_for: Option<[u8; 32]>| {
        let proof = w.passkey_proof(
            1,
            &Action::EndSessions {
                user: UserId(1),
                session: proof_for,
            },
        );
        IdentityCommand::EndSessionsWithProof {
            user: UserId(1),
            keep: token(2),
            session,
            proof,
        }
    };
    let cmd = end(&mut w, Some(token(4)), None);
    refused_id(&mut w, cmd, Reject::StepUpActionMismatch);
    assert_eq!(sessions(&w, 1, w.now_ns).len(), 2);
    let cmd = end(&mut w, Some(token(4)), Some(token(4)));
    ok_id(&mut w, cmd);
    assert_eq!(sessions(&w, 1, w.now_ns).len(), 1);

    // A password change ends the remaining key in the same command.
    let proof = w.passkey_proof(1, &Action::ChangePassword { user: UserId(1) });
    let change = IdentityCommand::ChangePassword {
        user: UserId(1),
        password_hash: NEW_HASH.into(),
        proof: Some(proof),
        keep_session: Some(token(2)),
    };
    w.events.clear();
    ok_id(&mut w, change);
    assert!(w.engine.keys().of_user(UserId(1)).is_empty());
    assert!(w.events.iter().any(|e| matches!(
        e,
        Event::Key(KeyEvent::Revoked { id, .. }) if id == "alice-withdraw-02"
    )));
}

/// The engine mirrors the signer's TOTP budget (`SetTotpBudget`): what TOTP alone approves of
/// an asset is capped per user per 24 h and refused at request time with `PASSKEY_REQUIRED`; a
/// passkey proof to an address not approved by TOTP is not capped.
#[test]
fn totp_alone_is_capped_by_the_mirrored_budget() {
    let mut w = W::new();
    let (u, addr) = totp_user(&mut w);
    w.ok(Command::SetTotpBudget {
        asset: BTC,
        budget: kinko_core::Amount(COIN),
    });
    let first = user(&w, u).last_totp_step;
    let cmd = totp_withdrawal(&mut w, u, addr, COIN / 2, first + 1);
    w.ok(cmd);
    w.now_ns = (first + 2) * TOTP_STEP_NS;
    let cmd = totp_withdrawal(&mut w, u, addr, COIN / 2 + 1, first + 2);
    w.refused(cmd, Reject::PasskeyRequired);
    // Up to the budget exactly is fine.
    let cmd = totp_withdrawal(&mut w, u, addr, COIN / 2, first + 2);
    w.ok(cmd);
    // A passkey user's passkey proof is not capped.
    w.fund(1, BTC, 3 * COIN);
    let a1 = w.add_address(1, BTC, "bc1qpasskey-out", 0).id;
    w.request(1, a1, 2 * COIN, None).unwrap();
    // Zero removes the engine's cap.
    w.ok(Command::SetTotpBudget {
        asset: BTC,
        budget: kinko_core::Amount(0),
    });
    w.now_ns = (first + 3) * TOTP_STEP_NS;
    let cmd = totp_withdrawal(&mut w, u, addr, 2 * COIN, first + 3);
    w.ok(cmd);
}

/// The language of a user's messages is engine state set by a journaled command: a new user
/// reads English, `SetLanguage` switches it (no proof, no security lock), an unknown user is
/// refused, and replay and a snapshot reproduce it.
#[test]
fn a_users_language_is_journaled_and_replayed() {
    let mut w = W::new();
    assert_eq!(user(&w, 1).language, Language::En);
    let locked = user(&w, 1).security_locked_until_ns;
    let set = |user: u64, language| IdentityCommand::SetLanguage {
        user: UserId(user),
        language,
    };
    assert_eq!(
        ok_id(&mut w, set(1, Language::Ja)),
        IdentityReply::Done(UserId(1))
    );
    assert_eq!(user(&w, 1).language, Language::Ja);
    assert_eq!(user(&w, 2).language, Language::En);
    assert_eq!(
        user(&w, 1).security_locked_until_ns,
        locked,
        "not a security change"
    );
    refused_id(&mut w, set(99, Language::Ja), Reject::UserNotFound);
    ok_id(&mut w, set(2, Language::Ja));
    ok_id(&mut w, set(2, Language::En));
    assert_eq!(user(&w, 2).language, Language::En);
    assert_replays_to(&w.log, w.engine.state_hash());
    let restored = Engine::from_snapshot_bytes(&w.engine.snapshot_bytes()).unwrap();
    assert_eq!(
        restored.identity().user(UserId(1)).unwrap().language,
        Language::Ja
    );
    // The tags the gateway maps to a language.
    assert_eq!(Language::of("ja-JP"), Some(Language::Ja));
    assert_eq!(Language::of("EN_gb"), Some(Language::En));
    assert_eq!(Language::of("fr"), None);
    assert_eq!(Language::of(""), None);
}
