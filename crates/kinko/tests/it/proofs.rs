//! Proof of liabilities on real data: a demo day of trading, deposits and withdrawals on a real
//! server; `kinko proof build` beside it; every customer's proof in every asset checked by
//! `kinko-verify` run as a process; a customer's proof over the API matching their balance.

use super::risk::{customer, until, whitelist, withdraw, BASE};
use super::{http, kinko, serving_addr_checking, spawn, terminate, text, BIN};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `kinko-verify` binary beside `kinko` (built by cargo if this test run did not build it).
fn verify_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name("kinko-verify");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "kinko-verify", "--bin", "kinko-verify"])
            .status()
            .expect("cargo build kinko-verify");
        assert!(st.success(), "cannot build kinko-verify");
    }
    bin
}

fn run_verify(args: &[&str]) -> (i32, String) {
    let out = Command::new(verify_bin()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

fn order(addr: &str, key: &str, side: &str) {
    let body = json!({"market": "BTC-USD", "side": side, "type": "market", "size": "0.01"});
    let (st, o) = http(addr, "POST", "/api/v1/orders", key, &body.to_string());
    assert_eq!(st, 200, "{o}");
}

#[test]
fn a_demo_days_proofs_verify_for_every_customer_with_kinko_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("kinko.toml");
    std::fs::write(&cfg, format!("{BASE}[risk]\nrules = []\n")).unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let data = tmp.path().join("data");
    let mut child = spawn(&data, &["--config", &cfg, "serve", "--demo"]);
    let addr = serving_addr_checking(&mut child, |_| {});
    let creds: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let alice = creds["traders"][0]["api_key"].as_str().unwrap().to_owned();
    let bob = creds["traders"][1]["api_key"].as_str().unwrap().to_owned();

    // Nothing published yet: a stable code, not an error page.
    let (st, r) = http(&addr, "GET", "/api/v1/proofs/liabilities", "", "");
    assert_eq!(
        (st, r["code"].as_str()),
        (404, Some("PROOF_NOT_PUBLISHED")),
        "{r}"
    );

    // The day: trades both ways, customers depositing, one withdrawing (paid out), one
    // withdrawal still in flight (its funds held) when the proof is built.
    order(&addr, &alice, "buy");
    order(&addr, &bob, "sell");
    order(&addr, &bob, "buy");
    let mut carol = customer(&addr, 1);
    let mut dave = customer(&addr, 2);
    for c in [&carol, &dave] {
        until("the deposit to be credited", 30, || {
            let (_, d) = http(&addr, "GET", "/api/v1/deposits?asset=LTC", &c.token, "");
            d.as_array()
                .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x["status"] == "credited"))
        });
    }
    let a = whitelist(&addr, &mut carol);
    let (st, w) = withdraw(&addr, &mut carol, &a);
    assert_eq!(st, 200, "{w}");
    until("carol's withdrawal to complete", 30, || {
        let (_, list) = http(&addr, "GET", "/api/v1/withdrawals", &carol.token, "");
        list[0]["status"] == "completed"
    });
    let a = whitelist(&addr, &mut dave);
    let (st, w) = withdraw(&addr, &mut dave, &a);
    assert_eq!(st, 200, "{w}");

    // The proof, while the server runs.
    let b = kinko(&data, &["--config", &cfg, "proof", "build"]);
    assert!(b.status.success(), "{}", text(&b));
    let (st, published) = http(&addr, "GET", "/api/v1/proofs/liabilities", "", "");
    assert_eq!(st, 200, "{published}");
    let roots = published["roots"].as_array().unwrap();
    let codes: Vec<&str> = roots.iter().map(|r| r["asset"].as_str().unwrap()).collect();
    for want in ["BTC", "LTC", "USD"] {
        assert!(codes.contains(&want), "{published}");
    }
    let published_file = tmp.path().join("liabilities.json");
    std::fs::write(&published_file, published.to_string()).unwrap();
    let published_file = published_file.to_str().unwrap().to_owned();
    let key = kinko_audit::load_or_create_key(&tmp.path().join("kinko-audit.key")).unwrap();
    let public_key = kinko_audit::public_key_hex(&key.verifying_key());
    assert!(roots
        .iter()
        .all(|r| r["key"] == "audit" && r["public_key"] == public_key.as_str()));

    // Every customer's proof in every asset, through `kinko proof user`, verified by the
    // standalone verifier as a process; their balances add up to the signed total.
    let sets: Vec<PathBuf> = std::fs::read_dir(data.join("proofs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let mut checked = 0;
    for r in roots {
        let asset = r["asset"].as_str().unwrap();
        let leaves = std::fs::read_to_string(sets[0].join(format!("{asset}.leaves.jsonl"))).unwrap();
        let mut sum: u128 = 0;
        let mut users = 0;
        for line in leaves.lines() {
            let leaf: Value = serde_json::from_str(line).unwrap();
            let user = leaf["user"].as_u64().unwrap().to_string();
            let out = kinko(&data, &["--config", &cfg, "proof", "user", &user, asset]);
            assert!(out.status.success(), "{}", text(&out));
            let file = tmp.path().join(format!("proof-{asset}-{user}.json"));
            std::fs::write(&file, &out.stdout).unwrap();
            let (code, said) = run_verify(&[
                file.to_str().unwrap(),
                "--published",
                &published_file,
                "--public-key",
                &public_key,
                "--user",
                &user,
            ]);
            assert_eq!(code, 0, "{asset} user {user}: {said}");
            assert!(said.contains("VALID"), "{said}");
            sum += leaf["balance"].as_str().unwrap().parse::<u128>().unwrap();
            users += 1;
            checked += 1;
        }
        assert_eq!(sum.to_string(), r["total"].as_str().unwrap(), "{asset}");
        assert_eq!(users, r["leaves"].as_u64().unwrap(), "{asset}");
    }
    assert!(checked >= 8, "only {checked} proofs");

    // Dave's LTC proof over the API carries his whole balance, the withdrawal in flight
    // included (held funds are still owed), and verifies.
    let (st, p) = http(&addr, "GET", "/api/v1/account/proofs/LTC", &dave.token, "");
    assert_eq!(st, 200, "{p}");
    let (_, bal) = http(&addr, "GET", "/api/v1/balances", &dave.token, "");
    let ltc = bal
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["asset"] == "LTC")
        .unwrap()
        .clone();
    let total = kinko_core::Amount::from_decimal(ltc["total"].as_str().unwrap(), 8)
        .unwrap()
        .0;
    let before_withdrawal_settles = p["balance"].as_str().unwrap().parse::<u128>().unwrap();
    assert!(
        before_withdrawal_settles == 100_000_000 || before_withdrawal_settles == total,
        "{p} {ltc}"
    );
    let file = tmp.path().join("dave.json");
    std::fs::write(&file, p.to_string()).unwrap();
    let (code, said) = run_verify(&[file.to_str().unwrap(), "--published", &published_file]);
    assert_eq!(code, 0, "{said}");
    // Shown to another customer as theirs, it fails.
    let (code, said) = run_verify(&[file.to_str().unwrap(), "--user", "999999"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("USER_MISMATCH"), "{said}");
    // Tampered on the way (a lower balance), it fails.
    let mut bad = p.clone();
    bad["balance"] = json!("1");
    std::fs::write(&file, bad.to_string()).unwrap();
    let (code, said) = run_verify(&[file.to_str().unwrap()]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("ROOT_HASH_MISMATCH"), "{said}");

    // Errors are stable codes: no proof for an asset the user has no leaf in, or unknown, or
    // without a credential.
    let (st, r) = http(&addr, "GET", "/api/v1/account/proofs/NOPE", &dave.token, "");
    assert_eq!((st, r["code"].as_str()), (404, Some("NO_PROOF")), "{r}");
    let (st, _) = http(&addr, "GET", "/api/v1/account/proofs/LTC", "", "");
    assert_eq!(st, 401);

    assert!(terminate(&mut child).success());
}

/// The `kinko-signer` binary beside `kinko` (built by cargo if this test run did not build it).
fn signer_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name("kinko-signer");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "kinko-signer", "--bin", "kinko-signer"])
            .status()
            .expect("cargo build kinko-signer");
        assert!(st.success(), "cannot build kinko-signer");
    }
    bin
}

/// `kinko-signer prove-control CHALLENGE --keystore KS --yes [--out OUT]`, as a cold keyholder
/// runs it offline (the passphrase from the environment, as the signer's own CLI tests give it).
fn prove_control(challenge: &Path, keystore: &Path, out: Option<&Path>) -> std::process::Output {
    let mut c = Command::new(signer_bin());
    c.arg("prove-control")
        .arg(challenge)
        .arg("--keystore")
        .arg(keystore)
        .arg("--yes")
        .env("KINKO_SIGNER_KDF_TEST_FAST", "1")
        .env("KINKO_SIGNER_PASSPHRASE", super::custody::PASSPHRASE)
        .stdin(std::process::Stdio::null());
    if let Some(out) = out {
        c.arg("--out").arg(out);
    }
    c.output().unwrap()
}

/// The `LTC ` line of a reserves report.
fn ltc_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("LTC "))
        .unwrap_or_else(|| panic!("no LTC line: {out}"))
}

/// The `reserves.json` of the proof set `set`, its LTC entry.
fn ltc_report(set: &Path) -> Value {
    let report: Value = serde_json::from_slice(&std::fs::read(set.join("reserves.json")).unwrap()).unwrap();
    report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["asset"] == "LTC")
        .unwrap()
        .clone()
}

/// Reserves against a real `litecoind -regtest` and signer: after deposits, a withdrawal and a
/// sweep to cold, `kinko proof reserves` reads the node's hot and cold balances through the
/// running server, per asset; the assets no custody service holds are "not proven", never
/// folded into a total. The cold balance counts only once the cold keyholders have proven
/// control offline at the proof's sequence: `kinko proof cold-challenge` → `kinko-signer
/// prove-control` with two of the three cold keystores → `kinko proof cold-submit`; bad
/// signature files are refused with their codes, and a later proof set never reuses the proof.
#[test]
fn the_reserves_report_against_a_real_litecoind_is_per_asset() {
    use super::crash::{ASSETS_WITHOUT_LTC_TOTP_BUDGET, COIN, OPERATOR_TOKEN};
    let mut x = super::fees::Exchange::start(500, ASSETS_WITHOUT_LTC_TOTP_BUDGET);
    x.deposit(10 * COIN);
    x.withdraw(COIN);
    x.until("the sweep to cold", || x.custody()["ledger_cold"] != "0.00000000");
    x.node.mine(1);
    let tmp = x._tmp.path().to_owned();
    let cfg = tmp.join("kinko.toml");
    let cfg = cfg.to_str().unwrap();
    let data = x.data.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(["--data-dir", &data, "--config", cfg])
            .args(args)
            .env_remove("KINKO_CONFIG")
            .env("KINKO_MASTER_KEY", super::TEST_MASTER_KEY)
            .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("KINKO_LISTEN", &x.addr)
            .output()
            .unwrap()
    };
    let b = run(&["proof", "build"]);
    assert!(b.status.success(), "{}", text(&b));
    let set = std::fs::read_dir(x.data.join("proofs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("liabilities.json").exists())
        .unwrap();

    // Before the keyholders: the hot key is proven by the signer, the cold balance is not, and
    // the hot wallet alone (5%) does not cover the liabilities: not proven, yet not short.
    let r = run(&["proof", "reserves"]);
    let out = text(&r);
    assert!(r.status.success(), "{out}");
    let ltc = ltc_line(&out);
    assert!(
        ltc.contains("liabilities 8.99900000")
            && ltc.contains("not proven: no proof of control of the cold keys: none submitted"),
        "{out}"
    );
    assert!(out.contains("hot key control verified: ["), "{out}");
    assert_eq!(ltc_report(&set)["coverage"], "unproven");

    // The ceremony. The challenge binds the set's sequence and LTC root hash.
    let challenge = tmp.join("challenge.json");
    let c = run(&[
        "proof",
        "cold-challenge",
        "LTC",
        "--out",
        challenge.to_str().unwrap(),
    ]);
    assert!(c.status.success(), "{}", text(&c));
    let ch: Value = serde_json::from_slice(&std::fs::read(&challenge).unwrap()).unwrap();
    let roots: Value = serde_json::from_slice(&std::fs::read(set.join("liabilities.json")).unwrap()).unwrap();
    let root = roots["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["asset"] == "LTC")
        .unwrap();
    assert_eq!(
        (&ch["sequence"], &ch["nonce"]),
        (&root["sequence"], &root["root_hash"]),
        "{ch}"
    );
    assert_eq!(
        (ch["threshold"].as_u64(), ch["keys"].as_array().unwrap().len()),
        (Some(2), 3)
    );

    // At the signer: a hot keystore is refused; an edited challenge is refused before signing.
    let o = prove_control(&challenge, &tmp.join("hot.keystore"), None);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("is not a cold keystore"), "{}", text(&o));
    let edited = tmp.join("edited.json");
    let mut e = ch.clone();
    e["message"] = json!(ch["message"]
        .as_str()
        .unwrap()
        .replace("\nsequence ", "\nsequence 1"));
    std::fs::write(&edited, e.to_string()).unwrap();
    let o = prove_control(&edited, &tmp.join("cold1.keystore"), None);
    assert!(
        !o.status.success() && text(&o).contains("WRONG_MESSAGE"),
        "{}",
        text(&o)
    );
    assert!(!tmp.join("edited.json.sig.json").exists());

    // Two of the three keyholders sign.
    let sig1 = tmp.join("cold1.sig.json");
    let o = prove_control(&challenge, &tmp.join("cold1.keystore"), Some(&sig1));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("it moves no coins"), "{}", text(&o));
    let o = prove_control(&challenge, &tmp.join("cold3.keystore"), None);
    assert!(o.status.success(), "{}", text(&o));
    let sig3 = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_str()
                .unwrap()
                .starts_with(&format!("{}.", challenge.display()))
        })
        .expect("the default signature file beside the challenge");
    assert!(
        sig3.to_str().unwrap().ends_with(".sig.json"),
        "{}",
        sig3.display()
    );

    // Bad submissions, each refused with its code; nothing is kept.
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let s1: Value = serde_json::from_slice(&std::fs::read(&sig1).unwrap()).unwrap();
    let bad = |name: &str, f: &dyn Fn(&mut Value)| {
        let mut v = s1.clone();
        f(&mut v);
        let path = tmp.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        p(&path)
    };
    let flipped = bad("flipped.json", &|v| {
        let sig = v["signature"].as_str().unwrap();
        let last = u8::from_str_radix(&sig[sig.len() - 2..], 16).unwrap() ^ 1;
        v["signature"] = json!(format!("{}{last:02x}", &sig[..sig.len() - 2]));
    });
    let outsider = super::custody::keystore(&tmp, "outsider.keystore", kinko_signer::keystore::Role::Cold).1;
    let unknown = bad("unknown.json", &|v| v["key"] = json!(outsider));
    let other_seq = bad("other-seq.json", &|v| {
        v["message"] = json!(v["message"]
            .as_str()
            .unwrap()
            .replace("\nsequence ", "\nsequence 9"));
    });
    let not_json = tmp.join("not.json");
    std::fs::write(&not_json, "signed, honest").unwrap();
    for (files, code) in [
        (vec![p(&sig1)], "TOO_FEW_SIGNATURES"),
        (vec![p(&sig1), p(&sig1)], "DUPLICATE_KEY"),
        (vec![p(&sig3), flipped], "BAD_SIGNATURE"),
        (vec![p(&sig3), unknown], "UNKNOWN_KEY"),
        (vec![p(&sig3), other_seq], "WRONG_MESSAGE"),
        (vec![p(&sig3), p(&not_json)], "BAD_FORMAT"),
    ] {
        let mut args = vec!["proof", "cold-submit", "LTC"];
        args.extend(files.iter().map(String::as_str));
        let o = run(&args);
        assert!(!o.status.success(), "{code}: {}", text(&o));
        assert!(text(&o).contains(code), "{code}: {}", text(&o));
        assert!(!set.join("LTC.cold-control.json").exists(), "{code}");
    }

    let o = run(&["proof", "cold-submit", "LTC", &p(&sig1), &p(&sig3)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 of 3 keyholders signed"), "{}", text(&o));

    // Now covered: hot proven by the signer, cold by two of three keyholders at this sequence.
    let r = run(&["proof", "reserves"]);
    let out = text(&r);
    assert!(r.status.success(), "{out}");
    let ltc = ltc_line(&out);
    assert!(
        ltc.contains("liabilities 8.99900000") && ltc.contains("covered"),
        "{out}"
    );
    let seq = root["sequence"].as_u64().unwrap();
    assert!(
        out.contains(&format!(
            "cold keys control verified: 2 of 3 keyholders (threshold 2) at sequence {seq}"
        )),
        "{out}"
    );
    // The node's balances as the operator's status shows them.
    let c = x.custody();
    let (hot, cold) = (c["node_hot"].as_str().unwrap(), c["node_cold"].as_str().unwrap());
    assert!(
        ltc.contains(&format!("hot {hot}")) && ltc.contains(&format!("cold {cold}")),
        "{ltc} {c}"
    );
    assert_ne!(cold, "0.00000000", "{c}");
    let btc = out.lines().find(|l| l.starts_with("BTC ")).unwrap();
    assert!(btc.contains("not proven"), "{out}");
    assert!(out.contains("verdict: no asset is short"), "{out}");
    assert!(out.contains("hot key control verified: ["), "{out}");
    let ltc = ltc_report(&set);
    assert_eq!(ltc["coverage"], "covered", "{ltc}");
    assert_eq!(ltc["hot_proven_by"], "the signer", "{ltc}");
    assert_eq!(
        ltc["cold_proven_by"],
        format!("2 of 3 keyholders (threshold 2) at sequence {seq}").as_str(),
        "{ltc}"
    );
    // The proofs of control check out independently: the message binds LTC, the sequence and
    // the root hash; the key is the configured hot key; the signature verifies — and fails for
    // any other message. The cold signatures verify against the configured cold multisig.
    let control = &ltc["hot_control"];
    let key: kinko_chain::keys::WatchKey = control["key"].as_str().unwrap().parse().unwrap();
    let message = control["message"].as_str().unwrap();
    let signature = control["signature"].as_str().unwrap();
    assert!(
        message.starts_with("kinko proof of reserves v1\nasset LTC\nsequence "),
        "{message}"
    );
    kinko_chain::control::verify_control(&key, message, signature).unwrap();
    let other = message.replace("asset LTC", "asset BTC");
    assert!(kinko_chain::control::verify_control(&key, &other, signature).is_err());
    let cold_proof: kinko_chain::control::ColdProof =
        serde_json::from_value(ltc["cold_control"].clone()).unwrap();
    assert_eq!(
        cold_proof.message, message,
        "the cold keys sign the hot key's message"
    );
    let configured = kinko_chain::keys::ColdKeys {
        threshold: 2,
        keys: ch["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| serde_json::from_value(k.clone()).unwrap())
            .collect(),
    };
    kinko_chain::control::verify_cold(&configured, message, &cold_proof.signatures).unwrap();

    // A later proof set (a new sequence and root) does not reuse the cold proof: not submitted
    // for it, the cold balance is not proven; the old proof copied in, or the old signature
    // files submitted, are another message.
    x.deposit(COIN / 10);
    let b = run(&["proof", "build"]);
    assert!(b.status.success(), "{}", text(&b));
    let later = std::fs::read_dir(x.data.join("proofs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("liabilities.json").exists())
        .max_by_key(|p| p.file_name().unwrap().to_str().unwrap().parse::<u64>().unwrap())
        .unwrap();
    assert_ne!(later, set);
    let r = run(&["proof", "reserves"]);
    let out = text(&r);
    assert!(r.status.success(), "{out}");
    assert!(
        ltc_line(&out).contains("no proof of control of the cold keys: none submitted"),
        "{out}"
    );
    std::fs::copy(
        set.join("LTC.cold-control.json"),
        later.join("LTC.cold-control.json"),
    )
    .unwrap();
    let r = run(&["proof", "reserves"]);
    let out = text(&r);
    assert!(ltc_line(&out).contains("cold keys: WRONG_MESSAGE"), "{out}");
    assert_eq!(ltc_report(&later)["coverage"], "unproven");
    std::fs::remove_file(later.join("LTC.cold-control.json")).unwrap();
    let o = run(&["proof", "cold-submit", "LTC", &p(&sig1), &p(&sig3)]);
    assert!(
        !o.status.success() && text(&o).contains("WRONG_MESSAGE"),
        "{}",
        text(&o)
    );
    assert!(!later.join("LTC.cold-control.json").exists());
    x.stop();
}

/// Roots signed by the signer as witness (`sign_liabilities_root`), the signer running for
/// real on its socket: `kinko proof build` beside a running server has every root signed by
/// the witness key and says so; a customer's proof verifies with `kinko-verify` pinned to the
/// witness key and fails pinned to another (the audit key). A witness that signs with another
/// key than the configured one, or cannot be reached, fails the build with its code and writes
/// nothing (never the audit key instead); with no witness configured, the audit key signs.
#[test]
fn roots_signed_by_the_witness_verify_pinned_to_its_key_only() {
    use super::crash::signer_rig;
    use super::custody::PASSPHRASE;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rig = signer_rig(dir);
    let witness = kinko_signer::Keystore::open_with(&dir.join("hot.keystore"), PASSPHRASE, true)
        .unwrap()
        .witness_key()
        .verifying_key();
    let witness_hex = kinko_audit::public_key_hex(&witness);
    let plain = format!("{BASE}[risk]\nrules = []\n");
    let with_witness = |key: &str| {
        format!(
            "{plain}[witness]\npublic_key = \"{key}\"\nsigner_socket = \"{}\"\n",
            rig.socket.display()
        )
    };
    let cfg = dir.join("kinko.toml");
    std::fs::write(&cfg, with_witness(&witness_hex)).unwrap();
    let cfg = cfg.to_str().unwrap().to_owned();
    let data = dir.join("data");
    let mut child = spawn(&data, &["--config", &cfg, "serve", "--demo"]);
    let addr = serving_addr_checking(&mut child, |_| {});

    let b = kinko(&data, &["--config", &cfg, "proof", "build"]);
    assert!(b.status.success(), "{}", text(&b));
    let said = String::from_utf8_lossy(&b.stdout).into_owned();
    assert!(
        said.contains(&format!("signed by the signer's witness key {witness_hex}")),
        "{said}"
    );
    let (st, published) = http(&addr, "GET", "/api/v1/proofs/liabilities", "", "");
    assert_eq!(st, 200, "{published}");
    let roots = published["roots"].as_array().unwrap();
    assert!(!roots.is_empty(), "{published}");
    assert!(
        roots
            .iter()
            .all(|r| r["key"] == "witness" && r["public_key"] == witness_hex.as_str()),
        "{published}"
    );
    // The signer logged every root it signed.
    let log = std::fs::read_to_string(dir.join("signer.log")).unwrap();
    let logged = log
        .lines()
        .filter(|l| l.contains(r#""kind":"signed_liabilities_root""#))
        .count();
    assert_eq!(logged, roots.len(), "{log}");

    // A customer's proof: valid pinned to the witness key, KEY_MISMATCH pinned to the audit key.
    let published_file = dir.join("liabilities.json");
    std::fs::write(&published_file, published.to_string()).unwrap();
    let root = roots
        .iter()
        .find(|r| r["leaves"].as_u64().unwrap() > 0)
        .expect("a tree with customers");
    let asset = root["asset"].as_str().unwrap();
    let set = data
        .join("proofs")
        .join(root["sequence"].as_u64().unwrap().to_string());
    let leaves = std::fs::read_to_string(set.join(format!("{asset}.leaves.jsonl"))).unwrap();
    let leaf: Value = serde_json::from_str(leaves.lines().next().unwrap()).unwrap();
    let user = leaf["user"].as_u64().unwrap().to_string();
    let out = kinko(&data, &["--config", &cfg, "proof", "user", &user, asset]);
    assert!(out.status.success(), "{}", text(&out));
    let file = dir.join("proof.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let file = file.to_str().unwrap();
    let published_file = published_file.to_str().unwrap();
    let (code, said) = run_verify(&[file, "--published", published_file, "--public-key", &witness_hex]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("root signed by the witness key {witness_hex}")),
        "{said}"
    );
    let audit = kinko_audit::load_or_create_key(&dir.join("kinko-audit.key")).unwrap();
    let audit_hex = kinko_audit::public_key_hex(&audit.verifying_key());
    let (code, said) = run_verify(&[file, "--public-key", &audit_hex]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("INVALID: KEY_MISMATCH"), "{said}");

    // `kinko proof build --out DIR` with the configuration `text`; its output and whether DIR
    // was written.
    let build_into = |name: &str, text_of_config: &str| {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text_of_config).unwrap();
        let out_dir = dir.join(format!("set-{name}"));
        let b = kinko(
            &data,
            &[
                "--config",
                config.to_str().unwrap(),
                "proof",
                "build",
                "--out",
                out_dir.to_str().unwrap(),
            ],
        );
        (b, out_dir.exists())
    };

    // The configured witness key is not the one the signer signs with: refused, nothing written.
    let (b, written) = build_into("wrong-key", &with_witness(&audit_hex));
    assert!(!b.status.success() && !written, "{}", text(&b));
    assert!(text(&b).contains("KEY_MISMATCH"), "{}", text(&b));

    // No witness configured: the audit key signs, and the output says so.
    let (b, written) = build_into("audit", &plain);
    assert!(b.status.success() && written, "{}", text(&b));
    let said = String::from_utf8_lossy(&b.stdout).into_owned();
    assert!(
        said.contains(&format!("signed by the audit key {audit_hex}")),
        "{said}"
    );

    // The witness signer is down: the build fails with the code, and does not fall back.
    rig.server.stop();
    let (b, written) = build_into("down", &with_witness(&witness_hex));
    assert!(!b.status.success() && !written, "{}", text(&b));
    assert!(text(&b).contains("SIGNER_UNREACHABLE"), "{}", text(&b));

    assert!(terminate(&mut child).success());
}
