//! Host-compromise rows for admins at the signer: forged reviews, held withdrawals sent
//! straight to the signer, the signer's own thresholds, forwarded halts and resuming without a
//! quorum. The signer runs on its real Unix socket; admins and customers hold software
//! passkeys the host never sees.

use crate::harness::*;
use kinko_core::identity::{challenge_bytes, Action};
use kinko_core::{Amount, AssetId, UserId};
use kinko_signer::admins::{self, AssertionFile};
use kinko_signer_proto::protocol::{
    Admin, AdminAssertion, AdminChange, ProofFactor, Request, Response, Review, ReviewThresholds, StepUp,
    Withdrawal,
};

const AMOUNT: u64 = 100_000;

/// An admin enrolled at the signer: kinko user id and passkey.
pub struct AdminKey {
    pub id: u64,
    pub passkey: Passkey,
}

impl AdminKey {
    pub fn new(id: u64) -> AdminKey {
        AdminKey {
            id,
            passkey: Passkey::new(),
        }
    }

    pub fn record(&self) -> Admin {
        Admin {
            id: self.id,
            name: format!("admin {}", self.id),
            email: format!("admin{}@example.com", self.id),
            credential_id: self.passkey.credential_id.clone(),
            public_key: self.passkey.public_key(),
        }
    }

    /// A passkey assertion over `digest`, issued at `issued_ns`.
    pub fn assert(&self, digest: [u8; 32], issued_ns: u64) -> StepUp {
        let nonce = random::<16>();
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

    pub fn approve(&self, digest: [u8; 32], issued_ns: u64) -> AdminAssertion {
        AdminAssertion {
            admin: self.id,
            proof: self.assert(digest, issued_ns),
        }
    }

    /// This admin's review of `w`, over the action written out independently of the signer.
    pub fn review(&self, w: &Withdrawal, issued_ns: u64) -> Review {
        Review {
            reviewer: self.id,
            proof: self.assert(review_action(w, self.id).digest(), issued_ns),
        }
    }
}

pub fn review_action(w: &Withdrawal, reviewer: u64) -> Action {
    Action::ReviewWithdrawal {
        user: UserId(reviewer),
        withdrawal: w.id,
        requester: UserId(w.user),
        asset: AssetId(w.asset),
        address: w.address.clone(),
        amount: Amount(w.amount),
        approve: true,
    }
}

/// A signer whose first admins (ids 10, 11, 12, quorum 2) were enrolled as `init` does.
pub fn env_with_admins() -> (Env, Vec<AdminKey>) {
    let mut env = Env::stopped(None);
    let keys: Vec<AdminKey> = (10..13).map(AdminKey::new).collect();
    let records: Vec<Admin> = keys.iter().map(AdminKey::record).collect();
    admins::enrol_first(&env.log_path(), &records, 2, env.now()).unwrap();
    env.start().unwrap();
    (env, keys)
}

/// The signer's identity and admin head, as the ceremony commands read them.
fn ceremony_digest(env: &Env, change: &AdminChange) -> [u8; 32] {
    let Response::Admins { head, .. } = env.call(&Request::Admins) else {
        panic!()
    };
    admins::ceremony_digest(&env.hot.to_string(), &head, change)
}

fn ceremony(env: &Env, change: AdminChange, assertions: Vec<AdminAssertion>) -> Response {
    let digest = ceremony_digest(env, &change);
    let mac = admins::admin_mac(&env.keys().clear_key(), &digest);
    env.call(&Request::AdminChange {
        change,
        assertions,
        mac,
    })
}

fn halt_seq(env: &Env) -> u64 {
    let Response::Admins { halt_seq, .. } = env.call(&Request::Admins) else {
        panic!()
    };
    halt_seq
}

/// A clear as `kinko-signer clear --assertion …` sends it (the keystore MAC and assertions).
fn clear_with(env: &Env, reason: &str, assertions: Vec<AdminAssertion>) -> Response {
    let mut client = env.client();
    let Response::Challenge { nonce } = client.call(&Request::ClearChallenge).unwrap() else {
        panic!()
    };
    let mac = kinko_signer::service::clear_mac(&env.keys().clear_key(), &nonce, reason);
    client
        .call(&Request::Clear {
            nonce,
            reason: reason.into(),
            mac,
            assertions,
        })
        .unwrap()
}

fn signed_count(env: &Env) -> usize {
    log_entries(&env.log_path(), "signed").len()
}

fn alerts(env: &Env, kind: &str) -> usize {
    log_entries(&env.log_path(), "alerted")
        .iter()
        .filter(|e| e["entry"]["alert"] == kind)
        .count()
}

/// Forged reviews of a withdrawal the engine held for two approvals: each refused with its
/// code and alerted, nothing signed; two real reviews sign it.
#[test]
fn forged_reviews_are_refused() {
    let (env, a) = env_with_admins();
    let c = Customer::new(3);
    env.onboard(&c);
    let now = env.now();
    let mut w = c.with_passkey(c.withdrawal(1, AMOUNT), now);
    w.approvals_needed = 2;
    let psbt = env.psbt_for(&c, AMOUNT);
    let with = |reviews: Vec<Review>| Withdrawal { reviews, ..w.clone() };
    // Held for review, sent straight to the signer without reviews.
    expect_refused(env.sign(&w, &psbt), "REVIEW_REQUIRED", false);
    // One real review is not two.
    expect_refused(
        env.sign(&with(vec![a[0].review(&w, now)]), &psbt),
        "REVIEW_REQUIRED",
        false,
    );
    // A review by a key that is no admin's (the host made one up).
    let stranger = AdminKey::new(20);
    expect_refused(
        env.sign(&with(vec![a[0].review(&w, now), stranger.review(&w, now)]), &psbt),
        "REVIEWER_UNKNOWN",
        false,
    );
    // The same admin twice.
    expect_refused(
        env.sign(&with(vec![a[0].review(&w, now), a[0].review(&w, now)]), &psbt),
        "REVIEWS_NOT_DISTINCT",
        false,
    );
    // A real admin's review of another withdrawal (another id; the same id, another amount).
    let other = Withdrawal { id: 99, ..w.clone() };
    let bigger = Withdrawal {
        amount: w.amount + 1,
        ..w.clone()
    };
    for wrong in [&other, &bigger] {
        expect_refused(
            env.sign(&with(vec![a[0].review(&w, now), a[1].review(wrong, now)]), &psbt),
            "REVIEW_INVALID",
            false,
        );
    }
    // An admin's name on an assertion made with another key (the host's own passkey).
    let mut forged = Review {
        reviewer: a[1].id,
        proof: stranger.assert(review_action(&w, a[1].id).digest(), now),
    };
    if let ProofFactor::Passkey { credential_id, .. } = &mut forged.proof.factor {
        *credential_id = a[1].passkey.credential_id.clone();
    }
    expect_refused(
        env.sign(&with(vec![a[0].review(&w, now), forged]), &psbt),
        "REVIEW_INVALID",
        false,
    );
    // A review older than review_max_age_s.
    let old = now - (DAY_S + 10) * NS;
    expect_refused(
        env.sign(&with(vec![a[0].review(&w, now), a[1].review(&w, old)]), &psbt),
        "REVIEW_STALE",
        false,
    );
    assert_eq!(signed_count(&env), 0);
    assert!(alerts(&env, "refused_sign_withdrawal") >= 8, "{}", env.log_text());
    // Two distinct admins, fresh, over this very withdrawal: signed.
    expect_signed(env.sign(&with(vec![a[0].review(&w, now), a[2].review(&w, now)]), &psbt));
    assert_eq!(signed_count(&env), 1);
}

/// A requester who is an admin cannot review their own withdrawal.
#[test]
fn requester_never_reviews() {
    let (env, a) = env_with_admins();
    let c = Customer::new(a[0].id);
    env.onboard(&c);
    let now = env.now();
    let mut w = c.with_passkey(c.withdrawal(1, AMOUNT), now);
    w.approvals_needed = 2;
    w.reviews = vec![a[0].review(&w, now), a[1].review(&w, now)];
    expect_refused(
        env.sign(&w, &env.psbt_for(&c, AMOUNT)),
        "REVIEWER_IS_REQUESTER",
        false,
    );
    w.reviews = vec![a[1].review(&w, now), a[2].review(&w, now)];
    expect_signed(env.sign(&w, &env.psbt_for(&c, AMOUNT)));
}

/// The signer's own fan-in rule, counted from its own log: a fourth user paying one
/// destination within 24 h needs reviews even when the host says nothing was held.
#[test]
fn fan_in_held_without_reviews_is_refused() {
    let (env, a) = env_with_admins();
    let first = Customer::new(1);
    let customers: Vec<Customer> = (1..=4)
        .map(|u| {
            let mut c = Customer::new(u);
            c.address = first.address.clone();
            c.script = first.script.clone();
            c
        })
        .collect();
    // Each customer's first passkey, then the shared address approved with it; both usable once
    // the first factor has matured.
    for c in &customers {
        env.ok(&c.register_passkey());
        env.ok(&c.register_address());
    }
    env.advance_s(FIRST_MATURITY_S + 1);
    for (i, c) in customers[..3].iter().enumerate() {
        let w = c.with_passkey(c.withdrawal(i as u64 + 1, AMOUNT), env.now());
        expect_signed(env.sign(&w, &env.psbt_for(c, AMOUNT)));
    }
    let c = &customers[3];
    let now = env.now();
    let w = c.with_passkey(c.withdrawal(4, AMOUNT), now);
    let psbt = env.psbt_for(c, AMOUNT);
    expect_refused(env.sign(&w, &psbt), "REVIEW_REQUIRED", false);
    let reviewed = Withdrawal {
        reviews: vec![a[1].review(&w, now), a[2].review(&w, now)],
        ..w.clone()
    };
    expect_signed(env.sign(&reviewed, &psbt));
}

/// The thresholds change only with a quorum; once lowered, a withdrawal above the
/// dual-approval amount needs reviews though the host held nothing.
#[test]
fn thresholds_change_only_with_a_quorum() {
    let (env, a) = env_with_admins();
    let c = Customer::new(3);
    env.onboard(&c);
    let change = AdminChange::Thresholds {
        thresholds: ReviewThresholds {
            dual_approval_sats: 50_000,
            approvals: 2,
            fan_in_users_max: 3,
            fan_in_window_s: 86_400,
        },
    };
    let now = env.now();
    let digest = ceremony_digest(&env, &change);
    // The host alone (no assertions), one admin, or a host MAC over it: refused.
    expect_refused(ceremony(&env, change.clone(), vec![]), "QUORUM_MISSING", false);
    expect_refused(
        ceremony(&env, change.clone(), vec![a[0].approve(digest, now)]),
        "QUORUM_MISSING",
        false,
    );
    expect_refused(
        env.call(&Request::AdminChange {
            change: change.clone(),
            assertions: vec![a[0].approve(digest, now), a[1].approve(digest, now)],
            mac: [7; 32],
        }),
        "ADMIN_MAC_INVALID",
        false,
    );
    // The withdrawal is still below the configuration's threshold.
    let w1 = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    expect_signed(env.sign(&w1, &env.psbt_for(&c, AMOUNT)));
    let approvals = vec![a[0].approve(digest, now), a[1].approve(digest, now)];
    assert_eq!(ceremony(&env, change.clone(), approvals.clone()), Response::Ok);
    // The same approvals do not apply twice: the admin head moved.
    expect_refused(ceremony(&env, change, approvals), "QUORUM_MISSING", false);
    let w2 = c.with_passkey(c.withdrawal(2, AMOUNT), env.now());
    let psbt = env.psbt_for(&c, AMOUNT);
    expect_refused(env.sign(&w2, &psbt), "REVIEW_REQUIRED", false);
    let now = env.now();
    let reviewed = Withdrawal {
        reviews: vec![a[0].review(&w2, now), a[1].review(&w2, now)],
        ..w2
    };
    expect_signed(env.sign(&reviewed, &psbt));
}

/// Admins are added and removed only with a quorum; the registry survives a restart.
#[test]
fn admin_ceremonies() {
    let (mut env, a) = env_with_admins();
    let d = AdminKey::new(13);
    let add = AdminChange::Add { admin: d.record() };
    let now = env.now();
    let digest = ceremony_digest(&env, &add);
    // The new admin cannot vouch for themselves.
    expect_refused(
        ceremony(
            &env,
            add.clone(),
            vec![a[0].approve(digest, now), d.approve(digest, now)],
        ),
        "QUORUM_MISSING",
        false,
    );
    assert_eq!(
        ceremony(
            &env,
            add.clone(),
            vec![a[0].approve(digest, now), a[1].approve(digest, now)]
        ),
        Response::Ok
    );
    expect_refused(ceremony(&env, add, vec![]), "ADMIN_CHANGE_INVALID", false);
    let quorum = AdminChange::Quorum { quorum: 9 };
    expect_refused(ceremony(&env, quorum, vec![]), "ADMIN_CHANGE_INVALID", false);
    env.restart();
    let Response::Admins { admins, quorum, .. } = env.call(&Request::Admins) else {
        panic!()
    };
    assert_eq!((admins.len(), quorum), (4, 2));
    // The new admin now counts; an admin is removed by two others.
    let remove = AdminChange::Remove { id: a[2].id };
    let digest = ceremony_digest(&env, &remove);
    let now = env.now();
    assert_eq!(
        ceremony(
            &env,
            remove,
            vec![d.approve(digest, now), a[0].approve(digest, now)]
        ),
        Response::Ok
    );
    let Response::Admins { admins, .. } = env.call(&Request::Admins) else {
        panic!()
    };
    assert_eq!(admins.iter().map(|a| a.id).collect::<Vec<_>>(), vec![10, 11, 13]);
    assert_eq!(log_entries(&env.log_path(), "admin_changed").len(), 6);
    assert_eq!(alerts(&env, "admin_change"), 2);
}

/// A halt forwarded by kinko stops signing at once; neither the host (socket, keystore MAC)
/// nor one admin resumes it; a quorum does, for this halt only.
#[test]
fn halt_binds_and_resume_needs_a_quorum() {
    let (env, a) = env_with_admins();
    let c = Customer::new(3);
    env.onboard(&c);
    assert_eq!(
        env.call(&Request::Halt {
            reason: "withdrawals of LTC halted: unapproved outflow".into(),
            source: "engine".into(),
        }),
        Response::Ok
    );
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), env.now());
    let psbt = env.psbt_for(&c, AMOUNT);
    expect_refused(env.sign(&w, &psbt), "SIGNER_HALTED", true);
    assert_eq!(alerts(&env, "halted"), 1);
    let seq = halt_seq(&env);
    assert!(seq > 0);
    let reason = "outflow explained; host rebuilt";
    let digest = admins::clear_digest(&env.hot.to_string(), seq, reason);
    let now = env.now();
    // The keystore MAC alone (what `clear` was before admins), one admin, a bad MAC.
    expect_refused(env.clear(reason), "QUORUM_MISSING", true);
    expect_refused(
        clear_with(&env, reason, vec![a[0].approve(digest, now)]),
        "QUORUM_MISSING",
        true,
    );
    let mut client = env.client();
    let Response::Challenge { nonce } = client.call(&Request::ClearChallenge).unwrap() else {
        panic!()
    };
    expect_refused(
        client
            .call(&Request::Clear {
                nonce,
                reason: reason.into(),
                mac: [1; 32],
                assertions: vec![a[0].approve(digest, now), a[1].approve(digest, now)],
            })
            .unwrap(),
        "CLEAR_INVALID",
        true,
    );
    // Approvals for another reason do not resume.
    let other = admins::clear_digest(&env.hot.to_string(), seq, "something else");
    expect_refused(
        clear_with(
            &env,
            reason,
            vec![a[0].approve(other, now), a[1].approve(other, now)],
        ),
        "QUORUM_MISSING",
        true,
    );
    expect_refused(env.sign(&w, &psbt), "SIGNER_HALTED", true);
    assert_eq!(signed_count(&env), 0);
    let approvals = vec![a[0].approve(digest, now), a[1].approve(digest, now)];
    assert_eq!(clear_with(&env, reason, approvals.clone()), Response::Ok);
    assert_eq!(alerts(&env, "resumed"), 1);
    expect_signed(env.sign(&w, &psbt));
    // A later halt is not resumed by the earlier approvals.
    assert_eq!(
        env.call(&Request::Halt {
            reason: "global halt".into(),
            source: "engine".into(),
        }),
        Response::Ok
    );
    expect_refused(clear_with(&env, reason, approvals), "QUORUM_MISSING", true);
    // A halt with no reason is refused (and halts nothing more).
    expect_refused(
        env.call(&Request::Halt {
            reason: " ".into(),
            source: "engine".into(),
        }),
        "HALT_INVALID",
        true,
    );
}

/// The console's assertion file turns into the protocol's assertion of the right admin.
#[test]
fn assertion_files_name_their_admin() {
    use base64::Engine as _;
    let b = |x: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
    let a = AdminKey::new(10);
    let digest = [5u8; 32];
    let proof = a.assert(digest, 1_000);
    let ProofFactor::Passkey {
        credential_id,
        authenticator_data,
        client_data_json,
        signature,
    } = &proof.factor
    else {
        panic!()
    };
    let file = AssertionFile {
        challenge: b(&proof_challenge(&proof)),
        credential_id: b(credential_id),
        authenticator_data: b(authenticator_data),
        client_data_json: b(client_data_json),
        signature: b(signature),
    };
    let got = admins::assertion_from_file(&file, &[a.record()]).unwrap();
    assert_eq!(got, AdminAssertion { admin: 10, proof });
    assert!(admins::assertion_from_file(&file, &[AdminKey::new(11).record()]).is_err());
}

fn proof_challenge(p: &StepUp) -> [u8; 60] {
    challenge_bytes(p.issued_ns, &p.nonce, &p.action)
}

/// A signer set up before admins: the keystore MAC alone enrols the first admin (as `init`
/// would), and from then on nothing changes, and nothing resumes, without an admin's assertion.
#[test]
fn a_signer_without_admins_needs_them_once_the_first_is_enrolled() {
    let env = Env::new();
    let a = AdminKey::new(10);
    let b = AdminKey::new(11);
    assert_eq!(
        ceremony(&env, AdminChange::Add { admin: a.record() }, vec![]),
        Response::Ok
    );
    let add_b = AdminChange::Add { admin: b.record() };
    expect_refused(ceremony(&env, add_b.clone(), vec![]), "QUORUM_MISSING", false);
    let digest = ceremony_digest(&env, &add_b);
    assert_eq!(
        ceremony(&env, add_b, vec![a.approve(digest, env.now())]),
        Response::Ok
    );
    let Response::Admins { quorum, .. } = env.call(&Request::Admins) else {
        panic!()
    };
    assert_eq!(quorum, 2);
    assert_eq!(
        env.call(&Request::Halt {
            reason: "drill".into(),
            source: "operator".into(),
        }),
        Response::Ok
    );
    expect_refused(env.clear("drill over"), "QUORUM_MISSING", true);
}
