//! The unmodified ccxt `coinbaseexchange` client, REST and ccxt.pro streams on the Coinbase feed,
//! against `kinko serve --demo`: runs
//! `crates/api/tests/ccxt/acceptance.py` with the pinned ccxt from `scripts/install-test-deps`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kinko");
/// Fixed, so that no master key file is created (in the working directory or anywhere).
const MASTER_KEY: &str = "6b696e6b6f206363787420616363657074616e63652074657374206b65792121";

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Collects a child's stdout or stderr on a thread, so that a full pipe never blocks it.
fn drain(r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut r = r;
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Like [`drain`], into a buffer that can be read while the child still runs.
pub(crate) fn drain_shared(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    log
}

/// Polls a child until it exits or `limit` passes (then kills it and returns None).
pub(crate) fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the server when the test ends, however it ends.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// The server's log so far (it may still be running).
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn ccxt_coinbaseexchange_passes_the_acceptance_script_against_the_demo() {
    let root = repo_root();
    let python = root.join("target/test-deps/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps (it creates the virtualenv with the pinned ccxt) and rerun",
        python.display()
    );
    let script = root.join("crates/api/tests/ccxt/acceptance.py");
    assert!(script.exists(), "{} is missing", script.display());

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env_remove("KINKO_CONFIG")
        .env("KINKO_MASTER_KEY", MASTER_KEY)
        .env("KINKO_LOG", "info")
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinko");
    let mut child = child;
    let log = drain_shared(child.stderr.take().unwrap());
    let mut server = Server { child, log };

    // The credentials file is written (atomically, by rename) once the demo is seeded.
    let credentials = data.join("demo-credentials.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !credentials.exists() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "kinko exited ({status}) before writing {}:\n{}",
                credentials.display(),
                server.log()
            );
        }
        if Instant::now() >= deadline {
            let _ = server.child.kill();
            panic!("no {} within 60 s:\n{}", credentials.display(), server.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut py = Command::new(&python)
        .arg(&script)
        .arg(&credentials)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the acceptance script");
    let out = drain(py.stdout.take().unwrap());
    let err = drain(py.stderr.take().unwrap());
    let status = wait_for(&mut py, Duration::from_secs(180));
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!("stdout:\n{out}\nstderr:\n{err}");
    let Some(status) = status else {
        panic!(
            "the acceptance script did not finish within 180 s\n{report}\nserver log:\n{}",
            server.log()
        );
    };
    if !status.success() || !out.contains(" 0 failed") {
        panic!(
            "the acceptance script failed ({status})\n{report}\nserver log:\n{}",
            server.log()
        );
    }
    // The streams were checked too (ccxt.pro on the Coinbase feed).
    for step in [
        "pro watch_order_book equals the REST book",
        "pro watch_ticker",
        "pro watch_tickers",
        "pro watch_trades",
        "pro watch_orders",
        "pro watch_my_trades",
    ] {
        assert!(
            out.contains(&format!("ok {step}:")),
            "step {step:?} did not pass\n{report}"
        );
    }
    println!("{out}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for(&mut server.child, Duration::from_secs(30));
    // The last lines reach the buffer just after the exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("stopped cleanly") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    let status = status.unwrap_or_else(|| panic!("kinko did not stop within 30 s of SIGTERM:\n{log}"));
    assert!(status.success(), "kinko exited with {status}:\n{log}");
    assert!(log.contains("stopped cleanly"), "{log}");
}
