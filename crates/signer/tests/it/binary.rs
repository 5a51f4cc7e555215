//! The `kinko-signer` binary: init, xpub, serve (answers hello, stops on SIGTERM), clear,
//! offline-sign, prove-control.

use crate::harness::*;
use kinko_chain::keys::{derive_hot, WatchKey};
use kinko_chain::psbt::Utxo;
use kinko_signer_proto::protocol::{Request, Response};
use kinko_signer_proto::SignerClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_kinko-signer");
const PASSPHRASE: &str = "binary test passphrase";

fn cmd() -> Command {
    let mut c = Command::new(BIN);
    c.env("KINKO_SIGNER_KDF_TEST_FAST", "1")
        .env("KINKO_SIGNER_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("the binary runs")
}

/// `kinko-signer init` of a regtest keystore at `ks`, with `extra` arguments.
fn init(ks: &Path, extra: &[&str]) -> Output {
    run(cmd()
        .args(["init", "--keystore"])
        .arg(ks)
        .args(["--network", "litecoin-regtest"])
        .args(extra))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_config(dir: &Path, keystore: &str) -> std::path::PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join("signer.toml");
    std::fs::write(
        &path,
        format!(
            r#"network = "litecoin-regtest"
asset = "LTC"
asset_id = 1
keystore = "{keystore}"
log = "signer.log"
socket = "run/signer.sock"

[policy]
per_tx_max_sats = 1000000
window_max_sats = 2000000
fee_max_sats = 100000

[webauthn]
rp_id = "localhost"
origins = ["http://localhost:8080"]
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn init_xpub_serve_clear_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("hot.keystore");
    let out = init(&ks, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("WARNING"), "{stdout}");
    assert_eq!(lines[1].split(' ').count(), 24, "{stdout}");
    let watch: WatchKey = lines
        .last()
        .unwrap()
        .parse()
        .expect("the last line is the watch key");
    assert!(watch.to_string().contains("/84h/1h/0h]tpub"));
    // Never overwritten.
    let again = init(&ks, &[]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    // xpub needs no passphrase.
    let out = run(Command::new(BIN)
        .args(["xpub", "--keystore"])
        .arg(&ks)
        .stdin(Stdio::null()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), watch.to_string());

    let config = write_config(dir.path(), "hot.keystore");
    // A wrong passphrase: one clear line, non-zero exit.
    let out = run(cmd()
        .env("KINKO_SIGNER_PASSPHRASE", "wrong wrong wrong")
        .args(["serve", "--config"])
        .arg(&config));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong passphrase or damaged keystore"), "{err}");

    let mut child = cmd()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("run/signer.sock");
    let mut client = wait_for(Duration::from_secs(20), || SignerClient::connect(&socket).ok())
        .expect("the signer listens");
    match client.call(&Request::Hello).unwrap() {
        Response::Hello { hot, network, .. } => {
            assert_eq!(hot, watch.to_string());
            assert_eq!(network, "litecoin-regtest");
        }
        other => panic!("{other:?}"),
    }
    drop(client);
    // clear through the binary (nothing is halted; it still needs the keystore and is logged).
    let out = run(cmd()
        .args(["clear", "--config"])
        .arg(&config)
        .args(["--reason", "drill"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(log_entries(&dir.path().join("signer.log"), "cleared").len(), 1);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_for(Duration::from_secs(20), || child.try_wait().unwrap()).expect("the signer stops");
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket is removed");
    let out = run(Command::new(BIN)
        .args(["verify-log", "--log"])
        .arg(dir.path().join("signer.log")));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn offline_sign_signs_what_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("hot.keystore");
    let out = init(&ks, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let watch: WatchKey = text(&out.stdout).lines().last().unwrap().parse().unwrap();
    let utxo = Utxo {
        outpoint: bitcoin::OutPoint {
            txid: bitcoin::hashes::Hash::from_byte_array(random::<32>()),
            vout: 0,
        },
        value: 150_000_000,
        derived: derive_hot(NET, &watch, 0, 4).unwrap(),
    };
    let (_, pay) = some_address(0x33);
    let change = derive_hot(NET, &watch, 1, 0).unwrap();
    let built =
        kinko_chain::psbt::build(NET, &[utxo], &[(pay, 100_000_000)], Some(&change), FEE_RATE).unwrap();
    let file = dir.path().join("refill.psbt");
    std::fs::write(&file, kinko_chain::psbt::to_base64(&built.psbt)).unwrap();
    // Without --yes and nothing on standard input: not signed.
    let out = run(cmd().arg("offline-sign").arg(&file).arg("--keystore").arg(&ks));
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1.00000000 tLTC"), "{stdout}");
    assert!(stdout.contains("1.50000000 tLTC"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "fee: {}",
            kinko_core::Amount(u128::from(built.fee)).to_decimal(8)
        )),
        "{stdout}"
    );
    let signed_path = dir.path().join("signed.psbt");
    let out = run(cmd()
        .arg("offline-sign")
        .arg(&file)
        .arg("--keystore")
        .arg(&ks)
        .arg("--yes")
        .arg("--out")
        .arg(&signed_path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let signed = kinko_chain::psbt::from_base64(&std::fs::read_to_string(&signed_path).unwrap()).unwrap();
    kinko_chain::psbt::finalize(&signed).expect("a complete signature");
    // Another key signs nothing and says so.
    let other = dir.path().join("other.keystore");
    let out = init(&other, &["--role", "cold"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(cmd()
        .arg("offline-sign")
        .arg(&file)
        .arg("--keystore")
        .arg(&other)
        .arg("--yes"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("can sign none"),
        "{}",
        text(&out.stderr)
    );
}

/// A cold keyholder's proof of control: `prove-control` shows the challenge and signs its
/// message with the cold key (a signature that verifies over that message only); it refuses a
/// hot keystore, a key not in the challenge, an edited message and, without `--yes` or an answer,
/// signs nothing.
#[test]
fn prove_control_signs_the_challenge_with_a_cold_key_only() {
    use kinko_chain::control::{control_message, verify_cold, verify_control, ColdChallenge, ColdSignature};
    use kinko_chain::keys::ColdKeys;
    let dir = tempfile::tempdir().unwrap();
    let watch = |name: &str, role: &str| -> (std::path::PathBuf, WatchKey) {
        let ks = dir.path().join(name);
        let out = init(&ks, &["--role", role]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        (ks, text(&out.stdout).lines().last().unwrap().parse().unwrap())
    };
    let (cold1, k1) = watch("cold1.keystore", "cold");
    let (_, k2) = watch("cold2.keystore", "cold");
    let (outsider, _) = watch("outsider.keystore", "cold");
    let (hot, _) = watch("hot.keystore", "hot");
    let cold = ColdKeys {
        threshold: 1,
        keys: vec![k1.clone(), k2],
    };
    let nonce = random::<32>();
    let challenge = ColdChallenge::new("LTC", 7, &nonce, &cold).unwrap();
    let file = dir.path().join("challenge.json");
    std::fs::write(&file, serde_json::to_string(&challenge).unwrap()).unwrap();
    let prove = |ks: &Path, file: &Path, yes: bool| {
        let mut c = cmd();
        c.arg("prove-control").arg(file).arg("--keystore").arg(ks);
        if yes {
            c.arg("--yes");
        }
        run(&mut c)
    };

    // Without --yes and nothing on standard input: shown, not signed.
    let out = prove(&cold1, &file, false);
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("sequence 7"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("not signed"), "{}", text(&out.stderr));
    let sig_path = dir
        .path()
        .join(format!("challenge.json.{}.sig.json", k1.fingerprint));
    assert!(!sig_path.exists());

    let out = prove(&cold1, &file, true);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sig: ColdSignature = serde_json::from_slice(&std::fs::read(&sig_path).unwrap()).unwrap();
    let message = control_message("LTC", 7, &nonce).unwrap();
    assert_eq!((sig.message.as_str(), &sig.key), (message.as_str(), &k1));
    verify_control(&k1, &message, &sig.signature).unwrap();
    verify_cold(&cold, &message, std::slice::from_ref(&sig)).unwrap();
    assert!(verify_control(&k1, &control_message("LTC", 8, &nonce).unwrap(), &sig.signature).is_err());

    // Refused: a hot keystore, a cold key not in the challenge, an edited message.
    let out = prove(&hot, &file, true);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a cold keystore"),
        "{}",
        text(&out.stderr)
    );
    let out = prove(&outsider, &file, true);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("UNKNOWN_KEY"), "{}", text(&out.stderr));
    let mut edited = challenge.clone();
    edited.message = edited.message.replace("asset LTC", "asset BTC");
    let edited_file = dir.path().join("edited.json");
    std::fs::write(&edited_file, serde_json::to_string(&edited).unwrap()).unwrap();
    let out = prove(&cold1, &edited_file, true);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("WRONG_MESSAGE"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&edited_file, "{\"format\": \"a transaction\"}").unwrap();
    let out = prove(&cold1, &edited_file, true);
    assert!(text(&out.stderr).contains("BAD_FORMAT"), "{}", text(&out.stderr));
}

/// An operator from nothing: `init` with two first admins (quorum 2), `serve`, `admin list`; a
/// halt; `clear --print-challenge`, the admins' assertion files, `clear` refused with one and
/// done with both; an admin ceremony through `admin quorum` likewise.
#[test]
fn init_with_admins_and_ceremonies_through_the_binary() {
    use crate::admins::AdminKey;
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("hot.keystore");
    let admins = [AdminKey::new(10), AdminKey::new(11)];
    let mut args = vec![
        "--log".to_owned(),
        dir.path().join("signer.log").display().to_string(),
    ];
    for a in &admins {
        let f = dir.path().join(format!("admin{}.json", a.id));
        std::fs::write(&f, serde_json::to_string(&a.record()).unwrap()).unwrap();
        args.extend(["--admin".to_owned(), f.display().to_string()]);
    }
    // A quorum above the admins is refused before anything is created.
    let mut bad = args.clone();
    bad.extend(["--quorum".to_owned(), "3".to_owned()]);
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = init(&ks, &bad);
    assert!(!out.status.success());
    assert!(!ks.exists());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = init(&ks, &argv);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 admin(s) enrolled"),
        "{}",
        text(&out.stdout)
    );
    let config = write_config(dir.path(), "hot.keystore");
    let mut child = cmd()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = dir.path().join("run/signer.sock");
    let mut client = wait_for(Duration::from_secs(20), || SignerClient::connect(&socket).ok())
        .expect("the signer listens");
    let out = run(cmd().args(["admin", "list", "--config"]).arg(&config));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains("quorum: 2"), "{listed}");
    assert!(
        listed.contains("admin10@example.com") && listed.contains("admin11@example.com"),
        "{listed}"
    );

    // Each admin signs the printed challenge; the files go back to the operator.
    let assertion_files = |printed: &str| -> Vec<std::path::PathBuf> {
        let challenge = printed
            .lines()
            .find_map(|l| l.strip_prefix("challenge: "))
            .expect("a challenge line")
            .trim()
            .to_owned();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&challenge)
            .unwrap();
        admins
            .iter()
            .map(|a| {
                let (authenticator_data, client_data_json, signature) = a.passkey.sign(&bytes);
                let file = kinko_signer::admins::AssertionFile {
                    challenge: challenge.clone(),
                    credential_id: b64(&a.passkey.credential_id),
                    authenticator_data: b64(&authenticator_data),
                    client_data_json: b64(&client_data_json),
                    signature: b64(&signature),
                };
                let path = dir
                    .path()
                    .join(format!("assert{}-{}.json", a.id, random::<4>()[0]));
                std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
                path
            })
            .collect()
    };

    // A halt, and resuming it.
    let out = run(cmd()
        .args(["halt", "--config"])
        .arg(&config)
        .args(["--reason", "drill"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(matches!(
        client.call(&Request::Status).unwrap(),
        Response::Status { halted: Some(_), .. }
    ));
    let clear = || {
        let mut c = cmd();
        c.args(["clear", "--config"])
            .arg(&config)
            .args(["--reason", "drill over"]);
        c
    };
    let out = run(clear().arg("--print-challenge"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = assertion_files(&text(&out.stdout));
    let out = run(clear().arg("--assertion").arg(&files[0]));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("QUORUM_MISSING"),
        "{}",
        text(&out.stderr)
    );
    let out = run(clear()
        .arg("--assertion")
        .arg(&files[0])
        .arg("--assertion")
        .arg(&files[1]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(matches!(
        client.call(&Request::Status).unwrap(),
        Response::Status { halted: None, .. }
    ));

    // A ceremony: the quorum goes to 1 with both admins' assertions.
    let quorum = || {
        let mut c = cmd();
        c.args(["admin", "quorum", "--config"])
            .arg(&config)
            .args(["--quorum", "1"]);
        c
    };
    let out = run(quorum().arg("--print-challenge"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = assertion_files(&text(&out.stdout));
    let out = run(quorum()
        .arg("--assertion")
        .arg(&files[0])
        .arg("--assertion")
        .arg(&files[1]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(cmd().args(["admin", "list", "--config"]).arg(&config));
    assert!(text(&out.stdout).contains("quorum: 1"), "{}", text(&out.stdout));

    drop(client);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_for(Duration::from_secs(20), || child.try_wait().unwrap()).expect("the signer stops");
    assert!(status.success(), "{status:?}");
}

/// A cold keyholder's Ethereum side: `eth-owner` prints the owner address of a cold keystore
/// (a hot one is refused); `offline-sign` of a refill request adds that owner's signature over
/// the digest it recomputes, refuses a second one and a file whose digest lies.
#[test]
fn eth_owner_and_offline_sign_of_a_refill_request() {
    use kinko_chain::eth::cold::{recover, EthRefill, RefillCall, REFILL_KIND};
    use kinko_chain::eth::EthAddress;
    let dir = tempfile::tempdir().unwrap();
    let cold = dir.path().join("cold.keystore");
    assert!(init(&cold, &["--role", "cold"]).status.success());
    let out = run(cmd().arg("eth-owner").arg("--keystore").arg(&cold));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let owner = EthAddress::parse(text(&out.stdout).trim()).unwrap();
    let hot = dir.path().join("hot.keystore");
    assert!(init(&hot, &[]).status.success());
    assert!(!run(cmd().arg("eth-owner").arg("--keystore").arg(&hot))
        .status
        .success());

    let call = RefillCall {
        chain_id: 31337,
        contract: EthAddress([0xc0; 20]),
        nonce: 0,
        to: EthAddress([0x40; 20]),
        value: 5,
        data: Vec::new(),
    };
    let request = EthRefill {
        kind: REFILL_KIND.into(),
        asset: "ETH".into(),
        amount: "5".into(),
        chain_id: call.chain_id,
        contract: call.contract.checksummed(),
        nonce: 0,
        to: call.to.checksummed(),
        value: "5".into(),
        data: String::new(),
        digest: hex::encode(call.digest()),
        owners: vec![owner.checksummed(), EthAddress([0x01; 20]).checksummed()],
        threshold: 2,
        signatures: Vec::new(),
    };
    let file = dir.path().join("refill.json");
    std::fs::write(&file, serde_json::to_string_pretty(&request).unwrap()).unwrap();
    let sign = || {
        run(cmd()
            .arg("offline-sign")
            .arg(&file)
            .arg("--keystore")
            .arg(&cold)
            .arg("--yes"))
    };
    let out = sign();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("digest (recomputed)"),
        "{}",
        text(&out.stdout)
    );
    let signed: EthRefill = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(signed.signatures.len(), 1);
    let mut sig = [0u8; 65];
    hex::decode_to_slice(&signed.signatures[0].signature, &mut sig).unwrap();
    assert_eq!(recover(&call.digest(), &sig), Some(owner));
    let again = sign();
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("SIGNATURE_DUPLICATE"),
        "{}",
        text(&again.stderr)
    );
    // A request whose stated digest is not its fields': refused before anything is asked.
    let mut lying = request;
    lying.value = "6".into();
    std::fs::write(&file, serde_json::to_string_pretty(&lying).unwrap()).unwrap();
    let out = sign();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("SIGNATURE_DIGEST_WRONG"),
        "{}",
        text(&out.stderr)
    );
}
