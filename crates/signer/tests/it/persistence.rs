//! The keystore and the log on disk: round trips, wrong passphrases, tampering, torn writes.

use crate::harness::*;
use kinko_signer::keystore::{KdfParams, Keystore, KeystoreError, Role};
use kinko_signer::service::StartError;
use kinko_signer_proto::protocol::Request;
use std::io::Write as _;

#[test]
fn keystore_round_trip_and_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.json");
    let (ks, words) = Keystore::create_with(&path, NET, Role::Hot, PASS, KdfParams::TEST_FAST).unwrap();
    assert_eq!(words.split_whitespace().count(), 24);
    // The words are the seed: BIP39 → BIP32 master → the same watch key.
    let m = bip39::Mnemonic::parse(&*words).unwrap();
    let master = bitcoin::bip32::Xpriv::new_master(NET.key_kind(), &m.to_seed("")).unwrap();
    let again = kinko_chain::keys::watch_key(&master, &kinko_chain::keys::hot_account_path(NET));
    assert_eq!(again, ks.watch_key);
    let u = Keystore::open_with(&path, PASS, true).unwrap();
    assert_eq!(u.watch_key(), &ks.watch_key);
    let e = Keystore::open_with(&path, "not the passphrase", true).unwrap_err();
    assert!(matches!(e, KeystoreError::WrongPassphrase));
    assert_eq!(e.to_string(), "wrong passphrase or damaged keystore");
    // A flipped ciphertext byte reads the same as a wrong passphrase.
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ct = v["ciphertext"].as_str().unwrap();
    let flipped = format!("{}{}", if &ct[..1] == "0" { "1" } else { "0" }, &ct[1..]);
    std::fs::write(&path, text.replace(ct, &flipped)).unwrap();
    assert!(matches!(
        Keystore::open_with(&path, PASS, true),
        Err(KeystoreError::WrongPassphrase)
    ));
}

#[test]
fn a_tampered_log_refuses_to_start() {
    let mut env = Env::new();
    let c = Customer::new(1);
    let c2 = Customer::new(2);
    env.ok(&c.register_passkey());
    env.ok(&c.register_address());
    env.ok(&c2.register_passkey());
    env.ok(&c2.register_address());
    env.stop();
    let text = env.log_text();
    let edited = text.replace(&c.address, &some_address(0xee).0);
    assert_ne!(edited, text);
    std::fs::write(env.log_path(), edited).unwrap();
    let err = env.start().unwrap_err();
    assert!(
        matches!(
            err,
            StartError::Log(kinko_signer::log::LogError::Broken { line: 3, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("line 3"), "{err}");
    // A dropped line too.
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(env.log_path(), format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    assert!(env.start().is_err());
    // The original starts again.
    std::fs::write(env.log_path(), &text).unwrap();
    env.start().unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let mut env = Env::new();
    let c = Customer::new(1);
    env.ok(&c.register_passkey());
    env.ok(&c.register_address());
    env.stop();
    let before = env.log_text().lines().count();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(env.log_path())
        .unwrap();
    f.write_all(br#"{"seq":99,"time_ns":1,"prev":"00"#).unwrap();
    drop(f);
    env.start().unwrap();
    let started = log_entries(&env.log_path(), "started");
    assert_eq!(started.len(), 2);
    assert_eq!(started[1]["entry"]["repaired_tail_bytes"], 32);
    assert_eq!(env.log_text().lines().count(), before + 1);
    // The registration survived.
    env.ok(&c.register_address());
    assert_eq!(log_entries(&env.log_path(), "registered_address").len(), 1);
    assert_eq!(
        kinko_signer::log::verify(&env.log_path()).unwrap().len(),
        before + 1
    );
}

#[test]
fn the_log_belongs_to_one_keystore() {
    let mut env = Env::new();
    let c = Customer::new(1);
    env.ok(&c.register_totp());
    env.stop();
    // Another signer's keystore cannot open the sealed TOTP secrets: it refuses to start.
    let other = Env::stopped(None);
    std::fs::copy(env.log_path(), other.log_path()).unwrap();
    let mut other = other;
    let err = other.start().unwrap_err();
    assert!(matches!(err, StartError::Replay { .. }), "{err}");
    // Two signers never share a log.
    env.start().unwrap();
    let twin = Env::stopped(None);
    let mut config = env.config();
    config.socket = twin.socket();
    let clock: std::sync::Arc<dyn kinko_signer::Clock> = env.clock.clone();
    assert!(kinko_signer::Server::start(config, env.keys(), clock).is_err());
    assert!(matches!(
        env.call(&Request::Status),
        kinko_signer_proto::Response::Status { .. }
    ));
}
