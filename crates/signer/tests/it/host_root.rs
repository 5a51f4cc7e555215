//! Host compromise, registrations and TOTP: what someone with root on the exchange's host (its
//! data dir, master key and TOTP secrets, the signer's socket) but not the customers' devices
//! tries, against a real signer on its Unix socket. Each row: refused with its code, an alert in
//! the signer's own outbox, nothing signed.

use crate::harness::*;
use kinko_core::identity::Action;
use kinko_core::UserId;
use kinko_signer_proto::protocol::{Request, SecretBytes};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AMOUNT: u64 = 500_000;
/// The default TOTP budget (0.05 LTC).
const BUDGET: u64 = 5_000_000;

fn signed_count(env: &Env) -> usize {
    log_entries(&env.log_path(), "signed").len()
}

#[track_caller]
fn expect_alert(env: &Env, kind: &str) {
    let kinds = env.alert_kinds();
    assert!(kinds.iter().any(|k| k == kind), "no {kind} alert in {kinds:?}");
}

/// A TOTP-approved registration of `c`'s address (what a host holding the secret can mint).
fn totp_address(env: &Env, c: &Customer) -> Request {
    Request::RegisterAddress {
        user: c.user,
        address_id: c.address_id,
        asset: ASSET,
        destination: c.address.clone(),
        label: "mine".into(),
        approval: Some(c.totp_proof(&c.address_action(), env.now(), 0)),
    }
}

fn first_totp(c: &Customer) -> Request {
    Request::RegisterTotp {
        user: c.user,
        secret: SecretBytes::new(&c.totp_secret),
        approval: None,
    }
}

/// Row: a factor planted for a user id the signer never knew is accepted only as immature,
/// with a notice; a withdrawal within the maturity is refused `FACTOR_IMMATURE`.
#[test]
fn planted_factor_for_an_unknown_user() {
    let env = Env::new();
    let planted = Customer::new(77);
    env.ok(&first_totp(&planted));
    expect_alert(&env, "first_factor");
    env.ok(&totp_address(&env, &planted));
    env.advance_s(DAY_S + 1); // the address cooled; the secret has not matured
    let mut w = planted.withdrawal(1, AMOUNT);
    w.proof = Some(planted.totp_proof(&Customer::action(&w), env.now(), 0));
    expect_refused(
        env.sign(&w, &env.psbt_for(&planted, AMOUNT)),
        "FACTOR_IMMATURE",
        false,
    );
    expect_alert(&env, "signature_refused");
    // A planted first passkey likewise.
    let other = Customer::new(78);
    env.ok(&other.register_passkey());
    env.ok(&other.register_address());
    env.advance_s(DAY_S + 1);
    let w = other.with_passkey(other.withdrawal(2, AMOUNT), env.now());
    expect_refused(
        env.sign(&w, &env.psbt_for(&other, AMOUNT)),
        "FACTOR_IMMATURE",
        false,
    );
    assert_eq!(signed_count(&env), 0);
}

/// Row: a second TOTP secret for a real user never replaces the first, approved or not.
#[test]
fn replacement_totp_for_a_real_user() {
    let env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let mut attacker = Customer::new(1);
    attacker.totp_secret = random::<20>().to_vec();
    for approval in [
        None,
        Some(c.passkey_proof(&Action::EnrolTotp { user: UserId(1) }, env.now())),
    ] {
        let r = env.call(&Request::RegisterTotp {
            user: 1,
            secret: SecretBytes::new(&attacker.totp_secret),
            approval,
        });
        expect_refused(r, "REGISTRATION_UNAPPROVED", false);
    }
    expect_alert(&env, "registration_refused");
    // The attacker's codes do not sign; the customer's still do.
    let mut w = c.withdrawal(1, AMOUNT);
    w.proof = Some(attacker.totp_proof(&Customer::action(&w), env.now(), 0));
    expect_refused(env.sign(&w, &env.psbt_for(&c, AMOUNT)), "PROOF_INVALID", true);
    assert_eq!(signed_count(&env), 0);
    assert_eq!(log_entries(&env.log_path(), "registered_totp").len(), 1);
}

/// Row: an address (or a passkey) registered without the user's passkey approval.
#[test]
fn address_or_passkey_without_the_users_passkey() {
    let env = Env::new();
    let c = Customer::new(1);
    env.onboard(&c);
    let mut evil = Customer::new(1);
    evil.address_id = 500;
    let (address, script) = some_address(0xee);
    evil.address = address;
    evil.script = script;
    evil.totp_secret = c.totp_secret.clone(); // the host can mint the user's TOTP codes
    let stranger = Passkey::new();
    let attempts = [
        // No approval at all.
        Request::RegisterAddress {
            user: 1,
            address_id: 500,
            asset: ASSET,
            destination: evil.address.clone(),
            label: "mine".into(),
            approval: None,
        },
        // A TOTP approval (the user has a passkey: TOTP is not enough).
        totp_address(&env, &evil),
        // The user's real passkey approval of another address.
        Request::RegisterAddress {
            user: 1,
            address_id: 500,
            asset: ASSET,
            destination: evil.address.clone(),
            label: "mine".into(),
            approval: Some(c.passkey_proof(&c.address_action(), env.now())),
        },
        // A passkey the signer does not hold.
        Request::RegisterAddress {
            user: 1,
            address_id: 500,
            asset: ASSET,
            destination: evil.address.clone(),
            label: "mine".into(),
            approval: Some(evil.passkey_proof(&evil.address_action(), env.now())),
        },
        // A second passkey without approval, and one whose key was swapped after approval.
        Request::RegisterPasskey {
            user: 1,
            credential_id: stranger.credential_id.clone(),
            public_key: stranger.public_key(),
            approval: None,
        },
        match c.register_passkey_of(&stranger) {
            Request::RegisterPasskey {
                user,
                credential_id,
                approval,
                ..
            } => Request::RegisterPasskey {
                user,
                credential_id,
                public_key: Passkey::new().public_key(),
                approval,
            },
            _ => unreachable!(),
        },
        // Forgetting the user's passkey without the user.
        Request::ForgetFactors {
            user: 1,
            approval: None,
        },
    ];
    for req in &attempts {
        expect_refused(env.call(req), "REGISTRATION_UNAPPROVED", false);
    }
    let alerts = env
        .alert_kinds()
        .iter()
        .filter(|k| *k == "registration_refused")
        .count();
    assert_eq!(alerts, attempts.len());
    // A withdrawal there is refused: the signer never learned the address.
    env.advance_s(DAY_S + 1);
    let w = c.with_passkey(evil.withdrawal(1, AMOUNT), env.now());
    expect_refused(
        env.sign(&w, &env.psbt_for(&evil, AMOUNT)),
        "ADDRESS_UNKNOWN",
        false,
    );
    assert_eq!(signed_count(&env), 0);
    // What the user really approved is taken: a second passkey, approved with the first.
    env.ok(&c.register_passkey_of(&stranger));
    // An approval is good once: replayed after the key was forgotten, it is refused.
    let again = c.register_passkey_of(&stranger);
    let remove = Action::RemovePasskey {
        user: UserId(1),
        credential_id: stranger.credential_id.clone(),
    };
    env.ok(&Request::ForgetFactors {
        user: 1,
        approval: Some(c.passkey_proof(&remove, env.now())),
    });
    let Request::RegisterPasskey { approval, .. } = &again else {
        unreachable!()
    };
    let replay = Request::RegisterPasskey {
        user: 1,
        credential_id: stranger.credential_id.clone(),
        public_key: stranger.public_key(),
        approval: approval.clone(),
    };
    env.ok(&replay); // first use of this approval's nonce
    env.ok(&Request::ForgetFactors {
        user: 1,
        approval: Some(c.passkey_proof(&remove, env.now())),
    });
    expect_refused(env.call(&replay), "REGISTRATION_UNAPPROVED", false);
}

/// Forgetting never makes a user new: a TOTP-only user whose secret was forgotten gets no
/// free first registration again.
#[test]
fn a_known_user_is_never_new_again() {
    let env = Env::new();
    let c = Customer::new(3);
    env.ok(&c.register_passkey());
    env.advance_s(FIRST_MATURITY_S + 1);
    let remove = Action::RemovePasskey {
        user: UserId(3),
        credential_id: c.passkey.credential_id.clone(),
    };
    env.ok(&Request::ForgetFactors {
        user: 3,
        approval: Some(c.passkey_proof(&remove, env.now())),
    });
    expect_refused(env.call(&first_totp(&c)), "REGISTRATION_UNAPPROVED", false);
    expect_alert(&env, "registration_refused");
}

/// Row: a stale proof (older than the engine's 5 minutes) is refused; a legitimate risk delay
/// extends it only up to the signer's own `delay_max_s`.
#[test]
fn stale_proof() {
    let env = Env::edited(|t| t.replace("proof_max_age_s = 21600\n", ""));
    let c = Customer::new(1);
    env.onboard(&c);
    let issued = env.now();
    env.advance_s(301);
    let w = c.with_passkey(c.withdrawal(1, AMOUNT), issued);
    expect_refused(env.sign(&w, &env.psbt_for(&c, AMOUNT)), "PROOF_STALE", false);
    expect_alert(&env, "signature_refused");
    // Waited an hour in a risk delay: fine.
    let issued = env.now();
    env.advance_s(3_600 + 250);
    let mut w = c.with_passkey(c.withdrawal(2, AMOUNT), issued);
    w.waited_s = 3_600;
    expect_signed(env.sign(&w, &env.psbt_for(&c, AMOUNT)));
    // A host claiming a ten-day wait gets at most delay_max_s (a day).
    let issued = env.now();
    env.advance_s(2 * DAY_S);
    let mut w = c.with_passkey(c.withdrawal(3, AMOUNT), issued);
    w.waited_s = 10 * DAY_S;
    expect_refused(env.sign(&w, &env.psbt_for(&c, AMOUNT)), "PROOF_STALE", false);
    assert_eq!(signed_count(&env), 1);
}

/// Row: a TOTP-only attacker holding the secret gets at most the budget per 24 h.
#[test]
fn totp_only_gets_at_most_the_budget() {
    let env = Env::edited(|t| {
        t.replace("per_tx_max_sats = 1000000", "per_tx_max_sats = 4000000")
            .replace("window_max_sats = 1500000", "window_max_sats = 100000000")
    });
    let c = Customer::new(5);
    env.ok(&first_totp(&c));
    env.ok(&totp_address(&env, &c));
    env.advance_s(FIRST_MATURITY_S + 1);
    let totp = |id: u64, amount: u64| {
        let mut w = c.withdrawal(id, amount);
        w.proof = Some(c.totp_proof(&Customer::action(&w), env.now(), 0));
        w
    };
    let first = 3_000_000;
    expect_signed(env.sign(&totp(1, first), &env.psbt_for(&c, first)));
    env.advance_s(31); // a new TOTP step
    let second = BUDGET - first + 1;
    expect_refused(
        env.sign(&totp(2, second), &env.psbt_for(&c, second)),
        "TOTP_BUDGET_EXCEEDED",
        false,
    );
    expect_alert(&env, "signature_refused");
    // Up to the budget exactly is fine; it rolls after 24 h and survives a restart.
    env.advance_s(31);
    expect_signed(env.sign(&totp(3, second - 1), &env.psbt_for(&c, second - 1)));
    let mut env = env;
    env.restart();
    env.advance_s(31);
    let w = {
        let mut w = c.withdrawal(4, 10_000);
        w.proof = Some(c.totp_proof(&Customer::action(&w), env.now(), 0));
        w
    };
    expect_refused(
        env.sign(&w, &env.psbt_for(&c, 10_000)),
        "TOTP_BUDGET_EXCEEDED",
        false,
    );
    env.advance_s(DAY_S);
    let mut w = c.withdrawal(4, 10_000);
    w.proof = Some(c.totp_proof(&Customer::action(&w), env.now(), 0));
    expect_signed(env.sign(&w, &env.psbt_for(&c, 10_000)));
    assert_eq!(signed_count(&env), 3);
}

/// A user with a passkey: TOTP proofs are capped, passkey proofs are not (within the limits).
#[test]
fn a_passkey_lifts_the_totp_budget() {
    let env = Env::edited(|t| {
        t.replace("per_tx_max_sats = 1000000", "per_tx_max_sats = 8000000")
            .replace("window_max_sats = 1500000", "window_max_sats = 100000000")
    });
    let c = Customer::new(1);
    env.onboard(&c);
    let amount = BUDGET + 1;
    let mut w = c.withdrawal(1, amount);
    w.proof = Some(c.totp_proof(&Customer::action(&w), env.now(), 0));
    expect_refused(
        env.sign(&w, &env.psbt_for(&c, amount)),
        "TOTP_BUDGET_EXCEEDED",
        false,
    );
    let w = c.with_passkey(c.withdrawal(1, amount), env.now());
    expect_signed(env.sign(&w, &env.psbt_for(&c, amount)));
}

/// The signer rate-limits registrations and alerts on a burst (once).
#[test]
fn registration_bursts_are_refused_and_alerted() {
    let env = Env::edited(|t| t.replace("fee_max_sats =", "registrations_per_hour_max = 3\nfee_max_sats ="));
    for u in 10..13 {
        env.ok(&Customer::new(u).register_passkey());
    }
    for u in 13..16 {
        expect_refused(
            env.call(&Customer::new(u).register_passkey()),
            "REGISTRATION_RATE",
            false,
        );
    }
    let bursts = env
        .alert_kinds()
        .iter()
        .filter(|k| *k == "registration_burst")
        .count();
    assert_eq!(bursts, 1);
    env.advance_s(3_601);
    env.ok(&Customer::new(13).register_passkey());
}

/// Loopback sinks: an HTTP server and an SMTP relay that record what they receive and stop by
/// themselves.
/// What a sink received.
type Received = Arc<Mutex<Vec<String>>>;

fn sinks(deadline: Duration) -> (u16, u16, Received, Received) {
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let (hp, sp) = (
        http.local_addr().unwrap().port(),
        smtp.local_addr().unwrap().port(),
    );
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let mails = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + deadline;
    let h = hooks.clone();
    http.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while Instant::now() < until {
            let Ok((s, _)) = http.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            h.lock().unwrap().push(String::from_utf8(body).unwrap());
            let mut s = s;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        }
    });
    let m = mails.clone();
    smtp.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while Instant::now() < until {
            let Ok((s, _)) = smtp.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            w.write_all(b"220 sink\r\n").unwrap();
            let mut text = String::new();
            let mut data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if data {
                    if line == ".\r\n" {
                        data = false;
                        w.write_all(b"250 queued\r\n").unwrap();
                    } else {
                        text.push_str(&line);
                    }
                    continue;
                }
                let up = line.to_ascii_uppercase();
                if up.starts_with("DATA") {
                    data = true;
                    w.write_all(b"354 go on\r\n").unwrap();
                } else if up.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else if up.starts_with("EHLO") {
                    w.write_all(b"250-sink\r\n250 8BITMIME\r\n").unwrap();
                } else {
                    text.push_str(&line);
                    w.write_all(b"250 ok\r\n").unwrap();
                }
            }
            m.lock().unwrap().push(text);
        }
    });
    (hp, sp, hooks, mails)
}

/// The signer's own channel delivers an alert to its webhook and by mail, and files it as sent.
#[test]
fn alerts_reach_the_webhook_and_the_relay() {
    let (hp, sp, hooks, mails) = sinks(Duration::from_secs(20));
    let env = Env::edited(|t| {
        format!(
            "{t}\n[alerts]\nwebhook_url = \"http://127.0.0.1:{hp}/signer\"\nsmtp_relay = \"127.0.0.1:{sp}\"\nsmtp_from = \"signer@example.test\"\nrecipients = [\"security@example.test\", \"risk@example.test\"]\nretry_s = 1\n"
        )
    });
    let c = Customer::new(1);
    env.onboard(&c);
    expect_refused(
        env.call(&Request::ForgetFactors {
            user: 1,
            approval: None,
        }),
        "REGISTRATION_UNAPPROVED",
        false,
    );
    let got = wait_for(Duration::from_secs(15), || {
        let h = hooks.lock().unwrap().clone();
        let m = mails.lock().unwrap().clone();
        (h.iter().any(|b| b.contains("registration_refused"))
            && m.iter().any(|t| t.contains("registration_refused")))
        .then_some((h, m))
    });
    let (h, m) = got.expect("the alert reached both channels");
    assert!(h.iter().any(|b| b.contains("REGISTRATION_UNAPPROVED")), "{h:?}");
    let mail = m.iter().find(|t| t.contains("registration_refused")).unwrap();
    assert!(
        mail.contains("RCPT TO:<security@example.test>") && mail.contains("RCPT TO:<risk@example.test>"),
        "{mail}"
    );
    // Delivered alerts move to sent/.
    let sent = wait_for(Duration::from_secs(10), || {
        let n = std::fs::read_dir(env.outbox().join("sent")).unwrap().count();
        (n > 0 && env.alert_kinds().is_empty()).then_some(n)
    });
    assert!(sent.is_some(), "outbox still holds {:?}", env.alert_kinds());
}

/// The admins enrolled at the signer receive its alerts by mail too, beside the configured
/// recipients: a host insider who halts signing or is refused cannot keep them from knowing.
#[test]
fn alerts_reach_the_admins_enrolled_at_the_signer() {
    let (hp, sp, _hooks, mails) = sinks(Duration::from_secs(20));
    let mut env = Env::stopped(None);
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(
        &env.config_path,
        format!(
            "{text}\n[alerts]\nwebhook_url = \"http://127.0.0.1:{hp}/signer\"\nsmtp_relay = \"127.0.0.1:{sp}\"\nsmtp_from = \"signer@example.test\"\nrecipients = [\"security@example.test\"]\nretry_s = 1\n"
        ),
    )
    .unwrap();
    let keys: Vec<crate::admins::AdminKey> = (10..12).map(crate::admins::AdminKey::new).collect();
    let records: Vec<_> = keys.iter().map(crate::admins::AdminKey::record).collect();
    kinko_signer::admins::enrol_first(&env.log_path(), &records, 2, env.now()).unwrap();
    env.start().unwrap();
    env.ok(&Request::Halt {
        reason: "an unapproved spend of LTC".into(),
        source: "engine".into(),
    });
    let mail = wait_for(Duration::from_secs(15), || {
        mails
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.contains("halted"))
            .cloned()
    })
    .expect("the halt was mailed");
    for to in [
        "security@example.test",
        "admin10@example.com",
        "admin11@example.com",
    ] {
        assert!(mail.contains(&format!("RCPT TO:<{to}>")), "{to} missing: {mail}");
    }
}
