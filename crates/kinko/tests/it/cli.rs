//! The command line as a newcomer types it: a port in use leaves nothing behind, `kinko audit
//! verify` ends with a verdict, `kinko incident list`, and every command of the README's first
//! section run as written against a real demo server.

use super::{kinko, text, BIN};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn last_line(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_port_in_use_stops_serve_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tmp.path().join("data");
    for args in [&["serve"][..], &["serve", "--demo"]] {
        // As a newcomer runs it: no master key in the environment, so one would be created in
        // the working directory (./kinko-master.key) if serve got that far.
        let out = Command::new(BIN)
            .current_dir(tmp.path())
            .args(args)
            .env_remove("KINKO_CONFIG")
            .env_remove("KINKO_MASTER_KEY")
            .env_remove("KINKO_DATA_DIR")
            .env("KINKO_LISTEN", &addr)
            .env("KINKO_LOG", "info")
            .output()
            .unwrap();
        let all = text(&out);
        assert!(!out.status.success(), "{all}");
        assert!(
            all.contains(&format!("cannot listen on {addr}")) && all.contains("nothing was created"),
            "{all}"
        );
        assert!(
            !all.contains('\u{1b}'),
            "colour codes in a log that is not a terminal:\n{all}"
        );
        assert!(!data.exists(), "the data directory was created:\n{all}");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}\n{all}");
    }
    drop(taken);
}

#[test]
fn audit_verify_ends_with_a_one_line_verdict_and_its_exit_code_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("audit");
    std::fs::create_dir_all(&dir).unwrap();
    {
        let key = kinko_audit::load_or_create_key(&dir.join("checkpoint.key")).unwrap();
        let mut log = kinko_audit::AuditLog::open(&dir, key).unwrap();
        for i in 0..3u64 {
            log.append(&kinko_audit::Entry {
                time_ns: 1_000 + i,
                kind: "operator.grant_role".into(),
                actor: "operator:founder".into(),
                subject: format!("user:{i}"),
                detail: serde_json::json!({"role": "viewer", "reason": "first admins"}),
            })
            .unwrap();
        }
        log.checkpoint(2_000).unwrap();
    }
    let ok = kinko(&data, &["audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(
        last_line(&ok),
        "verdict: ok — 3 records, 1 checkpoints verified",
        "{}",
        text(&ok)
    );
    // One entry edited after it was signed.
    let entries = dir.join(kinko_audit::ENTRIES_FILE);
    let edited = std::fs::read_to_string(&entries)
        .unwrap()
        .replacen("user:1", "user:7", 1);
    std::fs::write(&entries, edited).unwrap();
    let bad = kinko(&data, &["audit", "verify"]);
    assert!(!bad.status.success(), "{}", text(&bad));
    let verdict = last_line(&bad);
    assert!(
        verdict.starts_with("verdict: TAMPERED — ") && verdict.contains("line 2"),
        "{}",
        text(&bad)
    );
    assert!(
        !String::from_utf8_lossy(&bad.stderr).contains("kinko: error"),
        "the verdict is the last word:\n{}",
        text(&bad)
    );
}

#[test]
fn incident_list_shows_every_incident_one_per_line() {
    use kinko_core::engine::Command as C;
    use kinko_core::{Amount, AssetCode, AssetId};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    {
        let node = kinko_engine::launch::open(&kinko_engine::EngineConfig::new(&data)).unwrap();
        let h = node.sequencer.handle();
        let run = |c: C| h.submit(c).unwrap().reply.unwrap();
        run(C::DefineAsset {
            code: AssetCode::new("LTC").unwrap(),
            decimals: 8,
        });
        run(C::OpenIncident {
            kind: "unapproved_outflow".into(),
            asset: Some(AssetId(0)),
            summary: "2 LTC left the hot wallet with no approved withdrawal".into(),
            txids: vec!["ab".repeat(32)],
            missing: Amount(200_000_000),
            opened_by: "system:reconciliation".into(),
            halt: false,
        });
        run(C::OpenIncident {
            kind: "risk_halt".into(),
            asset: None,
            summary: "many accounts paying one address".into(),
            txids: vec![],
            missing: Amount(0),
            opened_by: "system:risk".into(),
            halt: false,
        });
        node.sequencer.shutdown().unwrap();
    }
    let out = kinko(&data, &["incident", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(
        lines[0],
        [
            "id",
            "status",
            "kind",
            "asset",
            "opened",
            "opened_by",
            "missing",
            "summary"
        ]
    );
    for l in &lines {
        assert_eq!(l.len(), 8, "{stdout}");
    }
    assert_eq!(lines[1][..4], ["1", "open", "unapproved_outflow", "LTC"]);
    assert_eq!(
        lines[1][5..],
        [
            "system:reconciliation",
            "2.00000000",
            "2 LTC left the hot wallet with no approved withdrawal"
        ]
    );
    assert_eq!(lines[2][..4], ["2", "open", "risk_halt", "all"]);
    assert!(lines[1][4].ends_with('Z'), "{stdout}");
    // A directory without a journal is a clear error.
    let none = kinko(&tmp.path().join("nothing"), &["incident", "list"]);
    assert!(
        !none.status.success() && text(&none).contains("not a journal directory"),
        "{}",
        text(&none)
    );
}

/// The commands of the README's first section ("First commands"), continuation lines joined.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme
        .find("## First commands")
        .expect("a First commands section");
    let section = &readme[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut commands = Vec::new();
    let mut current = String::new();
    let mut in_fence = false;
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        let Some(code) = line.strip_prefix("    ") else {
            continue;
        };
        if in_fence {
            continue;
        }
        current.push_str(code.trim_start());
        if current.ends_with('\\') {
            current.push('\n');
            continue;
        }
        commands.push(std::mem::take(&mut current));
    }
    commands
}

/// Runs one README line in bash (cwd `dir`, `kinko` on the PATH, the variables set by earlier
/// lines); returns its output and the value of the variable it assigns, if any.
fn bash(
    dir: &Path,
    path: &str,
    vars: &BTreeMap<String, String>,
    line: &str,
) -> (std::process::Output, Option<(String, String)>) {
    let assigned = line
        .split_once('=')
        .map(|(n, _)| n)
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_owned);
    let script = match &assigned {
        Some(n) => format!("set -eo pipefail\n{line}\nprintf '%s' \"${n}\""),
        None => format!("set -eo pipefail\n{line}"),
    };
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("KINKO_CONFIG")
        .env_remove("KINKO_LISTEN")
        .env_remove("KINKO_TOKEN")
        .env_remove("KINKO_DATA_DIR")
        .env_remove("KINKO_MASTER_KEY")
        .env_remove("KINKO_OPERATOR_TOKEN")
        .envs(vars)
        .output()
        .unwrap();
    let value = assigned.map(|n| (n, String::from_utf8_lossy(&out.stdout).into_owned()));
    (out, value)
}

#[test]
fn every_command_of_the_readme_tour_works_as_written() {
    if Command::new("curl").arg("--version").output().is_err() {
        // scripts/install-test-deps installs curl; a machine without it cannot run the tour.
        panic!("curl is needed (scripts/install-test-deps installs it)");
    }
    let commands = readme_commands();
    assert!(commands.len() >= 8, "{commands:#?}");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("kinko")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut vars = BTreeMap::new();
    let mut server: Option<(std::process::Child, String)> = None;
    let mut ran = Vec::new();
    let mut answers: Vec<(String, serde_json::Value)> = Vec::new();
    for line in &commands {
        if line == "scripts/test" {
            // The whole test suite, this test included: not run from inside it.
            continue;
        }
        if let Some(args) = line.strip_prefix("cargo run --release -p kinko -- ") {
            // The binary this test suite built stands for `cargo run --release -p kinko --`;
            // the one thing changed is the port: 8080 may be taken on a test machine, so the
            // server picks a free one and the lines below are pointed at it.
            assert_eq!(args, "serve --demo", "{line}");
            let mut child = Command::new(BIN)
                .args(args.split(' '))
                .current_dir(&home)
                .env_remove("KINKO_CONFIG")
                .env_remove("KINKO_DATA_DIR")
                .env_remove("KINKO_MASTER_KEY")
                .env("KINKO_LISTEN", "127.0.0.1:0")
                .env("KINKO_OPERATOR_TOKEN", TEST_OPERATOR_TOKEN)
                .env("KINKO_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let addr = serving(&mut child);
            server = Some((child, addr));
            ran.push(line.clone());
            continue;
        }
        let (_, addr) = server.as_ref().expect("the README starts the server first");
        let line = line
            .replace("127.0.0.1:8080", addr)
            .replace("localhost:8080", addr);
        let env = vars.clone();
        let (out, value) = bash(&home, &path, &env, &line);
        assert!(out.status.success(), "{line}\n{}", text(&out));
        if let Some((name, value)) = value {
            assert!(
                !value.trim().is_empty(),
                "{line} set {name} to nothing\n{}",
                text(&out)
            );
            vars.insert(name, value.trim().to_owned());
        } else if line.starts_with("curl ") {
            let body: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{line}: not JSON ({e})\n{}", text(&out)));
            assert!(
                body.get("code").is_none() || body.get("message").is_none(),
                "{line}: an error\n{body}"
            );
            answers.push((line.clone(), body));
        }
        ran.push(line);
    }
    // The trade the README places shows among the fills it then lists.
    let (_, fills) = answers
        .iter()
        .find(|(l, _)| l.contains("/api/v1/fills"))
        .expect("the tour lists fills");
    assert!(
        fills
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["side"] == "buy" && x["size"] == "0.01000000")),
        "{fills}"
    );
    let (mut child, addr) = server.expect("the tour starts a server");
    let token = vars.get("TOKEN").expect("the tour sets TOKEN").clone();
    let address = vars.get("ADDRESS").expect("the tour sets ADDRESS").clone();
    assert!(ran.iter().any(|l| l.starts_with("kinko sim deposit")), "{ran:#?}");
    // The deposit that `kinko sim deposit` sent (finding the server from
    // data/demo-credentials.json) is credited, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, deps) = super::http(&addr, "GET", "/api/v1/deposits?asset=LTC", &token, "");
        assert_eq!(st, 200, "{deps}");
        if deps
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["amount"] == "1.50000000" && d["status"] == "credited")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the README's deposit was not credited: {deps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // `--server` before or after the subcommand, from a directory without demo credentials.
    for args in [
        vec![
            "sim", "--server", &addr, "deposit", "--token", &token, &address, "0.25",
        ],
        vec![
            "sim", "deposit", &address, "0.25", "--token", &token, "--server", &addr,
        ],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(tmp.path())
            .env_remove("KINKO_CONFIG")
            .env_remove("KINKO_LISTEN")
            .env_remove("KINKO_TOKEN")
            .env_remove("KINKO_OPERATOR_TOKEN")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}\n{}", text(&out));
    }
    // Without --server and without demo credentials: the configured address, and a clear
    // error when nothing listens there.
    let status = super::terminate(&mut child);
    assert!(status.success());
    let gone = Command::new(BIN)
        .args(["sim", "deposit", "--token", &token, &address, "1"])
        .current_dir(&home)
        .env_remove("KINKO_CONFIG")
        .env_remove("KINKO_LISTEN")
        .env_remove("KINKO_TOKEN")
        .output()
        .unwrap();
    assert!(
        !gone.status.success() && text(&gone).contains("is `kinko serve` running?"),
        "{}",
        text(&gone)
    );
}

const TEST_OPERATOR_TOKEN: &str = "readme-tour-operator-token-0123456789abcdef";

/// The address from the server's "kinko serving" line (bounded), checking on the way that the
/// log written to a pipe carries no colour codes; the log keeps draining on a thread.
fn serving(child: &mut std::process::Child) -> String {
    super::serving_addr_checking(child, |line| {
        assert!(
            !line.contains('\u{1b}'),
            "colour codes in a log written to a pipe: {line:?}"
        );
    })
}
