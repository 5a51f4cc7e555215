//! Host compromise, witness rows: root on the kinko host rewrites the journal and the audit
//! log after the signer witnessed them (chain hashes recomputed, checkpoints signed again with
//! the key on the host). `kinko serve` and the signer run for real (the signer on its Unix
//! socket); `kinko journal verify` and `kinko audit verify` name the first record after which
//! history no longer matches what the signer saw, also from the signer's own export once the
//! local cosignatures are deleted; and the signer refuses the rewritten heads
//! (`HISTORY_FORKED`) and halts.

use super::crash::signer_rig;
use super::custody::PASSPHRASE;
use super::{serving_addr, terminate, text, BIN, TEST_MASTER_KEY};
use kinko_audit::witness::{read_cosignatures, Cosignature, LOG_AUDIT, LOG_JOURNAL};
use kinko_signer::Keystore;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const OPERATOR_TOKEN: &str = "operator-token-for-tests-only-0123456789abcdef";

fn kinko_cmd(config: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("KINKO_CONFIG", config)
        .env_remove("KINKO_DATA_DIR")
        .env("KINKO_LOG", "info")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", "127.0.0.1:0")
        .env("KINKO_OPERATOR_TOKEN", OPERATOR_TOKEN);
    c
}

fn run(config: &Path, args: &[&str]) -> Output {
    kinko_cmd(config).args(args).output().expect("run kinko")
}

fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

fn cosigned(data: &Path, log: &str) -> Vec<Cosignature> {
    read_cosignatures(&data.join("witness").join(format!("{log}.jsonl"))).unwrap()
}

fn audit_entries(data: &Path) -> u64 {
    std::fs::read_to_string(data.join("audit").join(kinko_audit::ENTRIES_FILE))
        .map_or(0, |t| t.lines().count() as u64)
}

/// Waits (bounded) until the witness has cosigned the journal's and the audit log's current heads.
fn witnessed_now(data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let head = kinko_journal::verify(&data.join("journal"))
            .map(|r| r.head_seq)
            .unwrap_or(0);
        let j = cosigned(data, LOG_JOURNAL).last().map_or(0, |c| c.size);
        let a = cosigned(data, LOG_AUDIT).last().map_or(0, |c| c.size);
        if head > 0 && j == head && a == audit_entries(data) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not witnessed in time: journal head {head}, cosigned {j}; audit {} entries, cosigned {a}",
            audit_entries(data)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn revoke(addr: &str, config: &Path, reason: &str) {
    let o = kinko_cmd(config)
        .env("KINKO_LISTEN", addr)
        .args(["admin", "revoke-everything", "--by", "ops", "--reason", reason])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// The witnessed sizes around `changed` (a journal sequence, or an audit tree size that
/// includes the changed entry): the largest below it and the smallest at or above it.
fn around(sizes: &[u64], changed: u64) -> (u64, u64) {
    let below = sizes.iter().copied().filter(|s| *s < changed).max().unwrap_or(0);
    let above = sizes
        .iter()
        .copied()
        .filter(|s| *s >= changed)
        .min()
        .expect("a witnessed point after the change");
    (below, above)
}

/// Rewrites the journal as root on the host would: every record read back, the one whose
/// payload holds `from` changed to `to` (same length), and the chain written afresh. Returns
/// the changed record's sequence.
fn rewrite_journal(dir: &Path, from: &[u8], to: &[u8]) -> u64 {
    let records: Vec<kinko_journal::Record> = kinko_journal::read_from(dir, 1)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut changed = None;
    let payloads: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut p = r.payload.clone();
            if changed.is_none() {
                if let Some(i) = p.windows(from.len()).position(|w| w == from) {
                    p[i..i + to.len()].copy_from_slice(to);
                    changed = Some(r.seq);
                }
            }
            p
        })
        .collect();
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (mut j, _) = kinko_journal::Journal::open(kinko_journal::JournalConfig::new(dir)).unwrap();
    for (r, p) in records.iter().zip(&payloads) {
        j.append_batch(&[kinko_journal::RecordIn {
            timestamp_ns: r.timestamp_ns,
            kind: r.kind,
            payload: p,
        }])
        .unwrap();
    }
    changed.expect("the text is in the journal")
}

/// Rewrites the audit log with the checkpoint key on the host: entries read back, the first
/// whose subject or detail holds `from` changed to `to`, all appended to fresh files and
/// signed again. Returns the changed entry's index.
fn rewrite_audit(dir: &Path, key_file: &Path, from: &str, to: &str) -> u64 {
    let key = kinko_audit::load_or_create_key(key_file).unwrap();
    let log = kinko_audit::AuditLog::open(dir, key.clone()).unwrap();
    let mut entries: Vec<kinko_audit::Entry> = (0..log.size()).map(|i| log.entry(i).unwrap()).collect();
    drop(log);
    let index = entries
        .iter()
        .position(|e| e.detail.to_string().contains(from))
        .expect("the text is in the audit log");
    let detail = entries[index].detail.to_string().replacen(from, to, 1);
    entries[index].detail = serde_json::from_str(&detail).unwrap();
    std::fs::remove_file(dir.join(kinko_audit::ENTRIES_FILE)).unwrap();
    std::fs::remove_file(dir.join(kinko_audit::CHECKPOINTS_FILE)).unwrap();
    let mut log = kinko_audit::AuditLog::open(dir, key).unwrap();
    for e in &entries {
        log.append(e).unwrap();
    }
    log.checkpoint(entries.last().unwrap().time_ns + 1).unwrap();
    index as u64
}

#[test]
fn history_rewritten_after_a_witness_checkpoint_is_named_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rig = signer_rig(dir);
    let witness_key = Keystore::open_with(&dir.join("hot.keystore"), PASSPHRASE, true)
        .unwrap()
        .witness_key()
        .verifying_key();
    let data = dir.join("data");
    let config: PathBuf = dir.join("kinko.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[witness]\npublic_key = \"{}\"\ninterval_s = 1\nsigner_socket = \"{}\"\n",
            data.display(),
            kinko_audit::public_key_hex(&witness_key),
            rig.socket.display()
        ),
    )
    .unwrap();

    // Serve; three operator actions, each witnessed before the next.
    let mut child = kinko_cmd(&config)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = serving_addr(&mut child);
    for reason in ["drill-zero", "drill-one1", "drill-two2"] {
        revoke(&addr, &config, reason);
        witnessed_now(&data);
    }
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    // The audit checkpoint key lives outside the data directory.
    let key_file = dir.join("kinko-audit.key");
    assert!(key_file.is_file() && !data.join("audit").join("checkpoint.key").exists());

    // Untouched history verifies against the witness.
    let ok = run(&config, &["journal", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        last_line(&ok).starts_with("verdict: ok — ") && last_line(&ok).contains("witness cosignatures match"),
        "{}",
        text(&ok)
    );
    let ok = run(&config, &["audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        last_line(&ok).contains("witness cosignatures match"),
        "{}",
        text(&ok)
    );

    // Root on the host rewrites both logs after the witness saw them.
    let journal_sizes: Vec<u64> = cosigned(&data, LOG_JOURNAL).iter().map(|c| c.size).collect();
    let audit_sizes: Vec<u64> = cosigned(&data, LOG_AUDIT).iter().map(|c| c.size).collect();
    let seq = rewrite_journal(&data.join("journal"), b"drill-one1", b"drill-ONE1");
    let index = rewrite_audit(&data.join("audit"), &key_file, "drill-one1", "drill-ONE1");
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();

    // The chain and the on-host checkpoint signatures still verify: only the witness tells.
    let bad = run(&config, &["journal", "verify"]);
    let out = text(&bad);
    assert!(!bad.status.success(), "{out}");
    assert!(
        out.contains("ok: every checksum and the hash chain verify"),
        "{out}"
    );
    let (below, above) = around(&journal_sizes, seq);
    let verdict = last_line(&bad);
    assert!(
        verdict.starts_with("verdict: TAMPERED — history was rewritten"),
        "{out}"
    );
    assert!(
        verdict.contains(&format!("through record {below};")),
        "changed {seq}: {out}"
    );
    assert!(
        verdict.contains(&format!("is record {}", below + 1)),
        "changed {seq}: {out}"
    );
    if above > below + 1 {
        assert!(verdict.contains(&format!("up to record {above}")), "{out}");
    }

    let bad = run(&config, &["audit", "verify"]);
    let out = text(&bad);
    assert!(!bad.status.success(), "{out}");
    assert!(
        out.contains("checkpoints: 1"),
        "re-signed with the on-host key: {out}"
    );
    let (below, above) = around(&audit_sizes, index + 1);
    let verdict = last_line(&bad);
    assert!(
        verdict.starts_with("verdict: TAMPERED — history was rewritten"),
        "{out}"
    );
    assert!(
        verdict.contains(&format!("through entry {};", below - 1)),
        "changed {index}: {out}"
    );
    assert!(
        verdict.contains(&format!("is entry {below}")),
        "changed {index}: {out}"
    );
    if above > below + 1 {
        assert!(verdict.contains(&format!("up to entry {}", above - 1)), "{out}");
    }

    // Root deletes kinko's copy of the cosignatures too: verify says so, and the signer's own
    // export (checked off the host) still names the place.
    std::fs::remove_dir_all(data.join("witness")).unwrap();
    let gone = run(&config, &["journal", "verify"]);
    assert!(!gone.status.success(), "{}", text(&gone));
    assert!(
        last_line(&gone).starts_with("verdict: UNWITNESSED — "),
        "{}",
        text(&gone)
    );
    let lines = kinko_signer::log::verify(&dir.join("signer.log")).unwrap();
    let export = dir.join("witness-export.jsonl");
    let body: String = kinko_signer::log::cosignatures(&lines)
        .iter()
        .map(|c| serde_json::to_string(c).unwrap() + "\n")
        .collect();
    std::fs::write(&export, body).unwrap();
    let export_arg = export.to_str().unwrap();
    let (below, _) = around(&journal_sizes, seq);
    for (args, needle) in [
        (
            vec!["journal", "verify", "--witness", export_arg],
            format!("through record {below};"),
        ),
        (
            vec!["audit", "verify", "--witness", export_arg],
            "history was rewritten".to_owned(),
        ),
    ] {
        let o = run(&config, &args);
        assert!(!o.status.success(), "{}", text(&o));
        let v = last_line(&o);
        assert!(
            v.starts_with("verdict: TAMPERED — ") && v.contains(&needle),
            "{args:?}: {}",
            text(&o)
        );
    }

    // Serving the rewritten history: the witness presents its heads, the signer refuses them
    // (HISTORY_FORKED) and halts all signing.
    assert_eq!(rig.server.with_signer(|s| s.halted().map(str::to_owned)), None);
    let mut child = kinko_cmd(&config)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _addr = serving_addr(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let halted = loop {
        if let Some(h) = rig.server.with_signer(|s| s.halted().map(str::to_owned)) {
            break h;
        }
        assert!(Instant::now() < deadline, "the signer did not halt");
        std::thread::sleep(Duration::from_millis(100));
    };
    terminate(&mut child);
    assert!(halted.starts_with("HISTORY_FORKED"), "{halted}");
    let refused: Vec<String> = lines_of(&dir.join("signer.log"), "refused");
    assert!(refused.iter().any(|c| c == "HISTORY_FORKED"), "{refused:?}");
}

/// The codes of the signer log's lines of this kind.
fn lines_of(log: &Path, kind: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["entry"]["kind"] == kind)
        .map(|v| v["entry"]["code"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The audit checkpoint key lives outside the data directory: a key at the old default inside
/// it is moved out at start (same key, the log still verifies), and a key configured inside it
/// is refused unless the config says `dangerous_key_in_data_dir = true`.
#[test]
fn the_audit_checkpoint_key_is_kept_outside_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let audit = data.join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let legacy = audit.join("checkpoint.key");
    let public = {
        let key = kinko_audit::load_or_create_key(&legacy).unwrap();
        let mut log = kinko_audit::AuditLog::open(&audit, key.clone()).unwrap();
        log.append(&kinko_audit::Entry {
            time_ns: 1,
            kind: "operator.grant_role".into(),
            actor: "operator:founder".into(),
            subject: "user:1".into(),
            detail: serde_json::json!({"role": "viewer"}),
        })
        .unwrap();
        log.checkpoint(2).unwrap();
        kinko_audit::public_key_hex(&key.verifying_key())
    };
    let config = dir.join("kinko.toml");
    let serve_once = |text: &str| -> (bool, String) {
        std::fs::write(&config, format!("data_dir = \"{}\"\n{text}", data.display())).unwrap();
        let mut child = kinko_cmd(&config)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = Vec::new();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(&mut stderr).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let serving = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    let done = l.contains("kinko serving");
                    log.push(l);
                    if done {
                        break true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
                Err(_) => assert!(Instant::now() < deadline, "no answer: {log:#?}"),
            }
        };
        if serving {
            terminate(&mut child);
        } else {
            let _ = child.wait();
        }
        (serving, log.join("\n"))
    };

    // The old default: moved out beside the data directory, same key.
    let (serving, log) = serve_once("");
    assert!(serving, "{log}");
    assert!(
        log.contains("moved the audit checkpoint key out of the data directory"),
        "{log}"
    );
    assert!(!legacy.exists());
    let moved = dir.join("kinko-audit.key");
    let key = kinko_audit::load_or_create_key(&moved).unwrap();
    assert_eq!(kinko_audit::public_key_hex(&key.verifying_key()), public);
    let v = run(&config, &["audit", "verify", "--public-key", &public]);
    assert!(v.status.success(), "{}", text(&v));

    // Configured inside the data directory: refused, naming the way out ...
    let inside = data.join("keys").join("audit.key");
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    let line = format!("[audit]\nkey_file = \"{}\"\n", inside.display());
    let (serving, log) = serve_once(&line);
    assert!(!serving, "{log}");
    assert!(
        log.contains("inside the data directory") && log.contains("dangerous_key_in_data_dir"),
        "{log}"
    );
    assert!(!inside.exists());
    // ... unless the explicit line accepts the risk (the same key, put there).
    std::fs::copy(&moved, &inside).unwrap();
    let (serving, log) = serve_once(&format!("{line}dangerous_key_in_data_dir = true\n"));
    assert!(serving, "{log}");
}
