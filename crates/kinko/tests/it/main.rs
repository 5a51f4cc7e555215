//! The `kinko` binary as an operator uses it: serve and stop, crash with SIGKILL mid-write,
//! corruption, configuration errors, help.

mod admin;
mod architecture;
mod backup;
mod ccxt;
mod cli;
mod cluster;
mod cluster_trading;
mod crash;
mod custody;
mod eth_custody;
mod fees;
mod full_disk;
mod host_root_witness;
mod incident;
mod mail;
mod monitoring;
mod proofs;
mod risk;
mod schemathesis;
mod segregation;
mod sim;
mod webapp;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kinko");
const TEST_MASTER_KEY: &str = "6b696e6b6f2074657374206d6173746572206b6579206f6e6c7920666f722074";

fn kinko(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("KINKO_CONFIG")
        .env("KINKO_LOG", "info")
        // Tests never write a master key file into the working directory, and never collide
        // on the default port.
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run kinko")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn spawn(data: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("KINKO_CONFIG")
        .env("KINKO_LOG", "info")
        // Tests never write a master key file into the working directory, and never collide
        // on the default port.
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinko")
}

/// Reads the child's log until its "kinko serving" line (bounded) and returns the address it
/// serves on; the rest of the log keeps draining on a thread.
fn serving_addr(child: &mut Child) -> String {
    serving_addr_checking(child, |_| {})
}

/// [`serving_addr`], giving each line read on the way to `check`.
fn serving_addr_checking(child: &mut Child, mut check: impl FnMut(&str)) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => l,
            Err(e) => {
                let status = child.try_wait().ok().flatten();
                panic!(
                    "no serving line ({e}; exit status {status:?}); the log so far:\n{}",
                    seen.join("\n")
                )
            }
        };
        check(&line);
        seen.push(line.clone());
        if line.contains("kinko serving") {
            let at = line.find("http://").expect("address in the serving line") + 7;
            return line[at..]
                .split(|c: char| c.is_whitespace() || c == '\u{1b}')
                .next()
                .unwrap()
                .to_owned();
        }
    }
}

/// Waits (bounded) for a child to exit.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kinko did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGTERM and waits (bounded) for the child to exit.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_exit(child, Duration::from_secs(30))
}

/// One HTTP/1.1 request on a fresh loopback connection: status and JSON body.
fn http(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, rest) = http_text(addr, method, path, key, body);
    // Bodies may be chunked: take the JSON between the first '{' or '[' and the last '}' or ']'.
    let start = rest.find(['{', '[']).unwrap_or(0);
    let end = rest.rfind(['}', ']']).map_or(rest.len(), |e| e + 1);
    (
        status,
        serde_json::from_str(&rest[start..end]).unwrap_or(serde_json::Value::Null),
    )
}

/// One HTTP/1.1 request on a fresh loopback connection: status and raw body.
fn http_text(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, rest.to_owned())
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn serve_starts_recovers_and_stops_gracefully_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for round in 0..2 {
        let mut child = spawn(&data, &["serve"]);
        // Bounded wait for the "serving" line on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no serving line; log so far: {log:#?}"));
            let serving = line.contains("kinko serving");
            log.push(line);
            if serving {
                break;
            }
        }
        // A second process cannot open the same data directory.
        let second = kinko(&data, &["audit"]);
        assert!(!second.status.success());
        assert!(
            text(&second).contains("in use by another kinko process"),
            "{}",
            text(&second)
        );
        let status = terminate(&mut child);
        let rest: Vec<String> = rx.try_iter().collect();
        assert!(status.success(), "round {round}: {status:?} {rest:#?}");
        assert!(rest.iter().any(|l| l.contains("stopped cleanly")), "{rest:#?}");
        let snaps = std::fs::read_dir(data.join("snapshots")).unwrap().count();
        assert!(snaps >= 1, "shutdown writes a snapshot");
    }
    // The first start journaled the five default assets, their withdrawal fees, four markets
    // with their passive bands and the built-in risk policy; the second defined nothing new.
    // Each journaled the relying party admins' passkeys are checked against: its origin names
    // the port, a new one at each start here.
    let v = kinko(&data, &["journal", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(out.contains("records    21"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("head_hash  ") && l.len() == 11 + 64),
        "{out}"
    );
    let d = kinko(&data, &["journal", "dump"]);
    assert!(d.status.success());
    let dump = String::from_utf8_lossy(&d.stdout);
    assert_eq!(dump.lines().count(), 21);
    assert_eq!(dump.matches("SetRelyingParty").count(), 2, "{dump}");
    assert_eq!(dump.matches("SetWithdrawalFee").count(), 5, "{dump}");
    assert_eq!(dump.matches("SetPassiveBand").count(), 4, "{dump}");
    assert!(
        dump.contains("SetRiskPolicy") && dump.contains("fan-in-halt"),
        "{dump}"
    );
    assert!(dump.contains("DefineAsset") && dump.contains("JPY"), "{dump}");
    assert!(
        dump.contains("DefineMarket") && dump.contains("BTC-JPY"),
        "{dump}"
    );
    let a = kinko(&data, &["audit"]);
    assert!(a.status.success(), "{}", text(&a));
    assert!(String::from_utf8_lossy(&a.stdout).contains("ok: every invariant holds"));
    let s = kinko(&data, &["snapshot"]);
    assert!(s.status.success(), "{}", text(&s));
}

/// Runs the load generator until it has acknowledged at least `min_acks` commands, then
/// SIGKILLs it. Returns every transfer id it acknowledged before dying.
fn load_and_kill(data: &Path, id_base: u64, min_acks: usize) -> Vec<u128> {
    let mut child = spawn(
        data,
        &[
            "bench",
            "load",
            "--commands",
            "10000000",
            "--id-base",
            &id_base.to_string(),
            "--print-acks",
        ],
    );
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.len() < min_acks {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("load generator acknowledged too little before the deadline");
        acks.push(line);
    }
    child.kill().unwrap(); // SIGKILL, in the middle of writing
    child.wait().unwrap();
    reader.join().unwrap();
    acks.extend(rx.try_iter());
    acks.iter()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn journal_ids(data: &Path) -> std::collections::BTreeSet<u128> {
    let d = kinko(data, &["journal", "dump"]);
    assert!(d.status.success(), "{}", text(&d));
    let dump = String::from_utf8_lossy(&d.stdout);
    dump.match_indices("TransferId(")
        .map(|(i, m)| {
            let rest = &dump[i + m.len()..];
            rest[..rest.find(')').unwrap()].parse().unwrap()
        })
        .collect()
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_command_and_a_torn_tail_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut acked = Vec::new();
    for round in 0..3u64 {
        acked.extend(load_and_kill(&data, 1_000_000_000 * (round + 1), 2_000));
        // Restart: recovery succeeds (repairing whatever the kill left) and audits clean.
        let a = kinko(&data, &["audit"]);
        assert!(a.status.success(), "round {round}: {}", text(&a));
    }
    let present = journal_ids(&data);
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged transfers lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(acked.len() >= 6_000);

    // Now a crash in the middle of a write, made exact: the next command's record is only half
    // on disk.
    let seg = segments(&data).pop().unwrap();
    let before = std::fs::read(&seg).unwrap();
    let one = kinko(&data, &["bench", "load", "--commands", "1", "--id-base", "7777"]);
    assert!(one.status.success(), "{}", text(&one));
    let after = std::fs::read(segments(&data).pop().unwrap()).unwrap();
    assert_eq!(
        segments(&data).pop().unwrap(),
        seg,
        "the record went to the same segment"
    );
    let start = before.iter().zip(&after).position(|(a, b)| a != b).unwrap();
    let end = after.iter().zip(&before).rposition(|(a, b)| a != b).unwrap() + 1;
    let mut torn = before.clone();
    let half = start + (end - start) / 2;
    torn[start..half].copy_from_slice(&after[start..half]);
    std::fs::write(&seg, &torn).unwrap();
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();

    let v = kinko(&data, &["journal", "verify"]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("torn_tail  segment"),
        "{}",
        text(&v)
    );
    let a = kinko(&data, &["audit"]);
    assert!(a.status.success(), "{}", text(&a));
    assert!(
        String::from_utf8_lossy(&a.stderr).contains("torn"),
        "{}",
        text(&a)
    );
    let present = journal_ids(&data);
    assert!(
        !present.contains(&7777),
        "the unacknowledged half-written command is gone"
    );
    assert!(acked.iter().all(|id| present.contains(id)));
    let v = kinko(&data, &["journal", "verify"]);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("torn_tail  none"),
        "{}",
        text(&v)
    );
}

#[test]
fn corruption_in_the_middle_refuses_to_start_and_names_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let load = kinko(&data, &["bench", "load", "--commands", "3000"]);
    assert!(load.status.success(), "{}", text(&load));
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();
    let seg = segments(&data).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap();
    let offset = end / 2;
    bytes[offset] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    for args in [&["serve"][..], &["journal", "verify"][..], &["audit"][..]] {
        let o = kinko(&data, args);
        assert!(!o.status.success(), "{args:?} accepted a corrupt journal");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&name), "{args:?}: {err}");
        assert!(err.contains("offset"), "{args:?}: {err}");
        assert!(err.contains("seq"), "{args:?}: {err}");
    }
}

#[test]
fn config_with_unknown_keys_is_refused_and_help_explains_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("kinko.toml");
    std::fs::write(&cfg, "data_dir = \"x\"\n[engine]\nbatch_size = 5\n").unwrap();
    let o = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("batch_size") && err.contains("kinko.toml"), "{err}");

    let h = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&h.stdout);
    for word in [
        "serve",
        "journal",
        "snapshot",
        "audit",
        "bench",
        "--config",
        "--data-dir",
    ] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
    let j = Command::new(BIN).args(["journal", "--help"]).output().unwrap();
    let jh = String::from_utf8_lossy(&j.stdout);
    assert!(jh.contains("verify") && jh.contains("dump"), "{jh}");
}
