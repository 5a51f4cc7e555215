//! `kinko serve` with its data directory on a real, small tmpfs that fills up: every order
//! acknowledged is there after a restart, no order answered with an error is, `/ready` and
//! `/metrics` say the journal is full while it is, and once space is freed writes resume
//! without a restart. Needs root (mount), as CI has.

use super::{http, http_text, serving_addr, spawn, terminate};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs failed (the test needs root): {status}"
        );
        Tmpfs { dir, _parent: parent }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The server, killed if the test ends early (before the tmpfs is unmounted).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..10_000 {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filler: {e}"),
        }
    }
    // Whatever is left is smaller than a chunk: take it too.
    for _ in 0..100_000 {
        match f.write(&[0u8; 512]) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn client_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A buy far below the demo's asks, immediate-or-cancel: journaled, never resting, never
/// filling, so no open-order limit is reached and each one is a done order afterwards.
fn place(addr: &str, key: &str, n: u64) -> (u16, serde_json::Value) {
    let body = format!(
        r#"{{"market":"BTC-USD","side":"buy","price":"28000","size":"0.001","time_in_force":"ioc","client_order_id":"{}"}}"#,
        client_id(n)
    );
    http(addr, "POST", "/api/v1/orders", key, &body)
}

fn ready(addr: &str) -> (u16, serde_json::Value) {
    http(addr, "GET", "/ready", "", "")
}

/// Polls `/ready` (bounded) until it answers `status`.
fn wait_ready(addr: &str, status: u16, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let (st, body) = ready(addr);
        if st == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/ready stayed {st}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(data: &Path, config: &Path) -> (Server, String) {
    let config = config.to_str().unwrap();
    let mut child = Server(spawn(data, &["--config", config, "serve", "--demo"]));
    let addr = serving_addr(&mut child.0);
    (child, addr)
}

#[test]
fn a_full_disk_refuses_orders_without_applying_them_and_writing_resumes_when_space_returns() {
    let tmpfs = Tmpfs::mount(12);
    let data = tmpfs.dir.join("data");
    // Outside the tmpfs: the configuration. Rate limits out of the way; a short tick so that
    // the sequencer notices returned space quickly; the smallest segment size.
    let outside = tempfile::tempdir().unwrap();
    let config = outside.path().join("kinko.toml");
    fs::write(
        &config,
        "[api]\nrate_per_key_burst = 1000000\nrate_per_key_per_s = 1000000\n\
         rate_private_per_key_burst = 1000000\nrate_private_per_key_per_s = 1000000\n\
         rate_per_ip_burst = 1000000\nrate_per_ip_per_s = 1000000\n\
         rate_public_per_ip_burst = 1000000\nrate_public_per_ip_per_s = 1000000\n\
         [engine]\ntick_ms = 100\nsegment_bytes_max = 1048576\n",
    )
    .unwrap();

    let (mut server, addr) = serve(&data, &config);
    wait_ready(&addr, 200, Duration::from_secs(30));
    let creds: serde_json::Value =
        serde_json::from_slice(&fs::read(data.join("demo-credentials.json")).unwrap()).unwrap();
    let key = creds["traders"][0]["api_key"].as_str().unwrap().to_owned();
    let (st, first) = place(&addr, &key, 0);
    assert_eq!(st, 200, "{first}");

    // Take every free byte of the tmpfs; the journal has what its segment preallocated.
    let filler = tmpfs.dir.join("filler");
    fill(&filler);

    let mut acked = vec![0u64];
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut n = 1u64;
    // Orders until a few are refused; bounded by count and time.
    while refused.len() < 5 {
        assert!(
            n < 100_000 && Instant::now() < deadline,
            "the disk never filled ({n} orders)"
        );
        let (st, body) = place(&addr, &key, n);
        match st {
            200 => acked.push(n),
            _ => {
                assert_eq!(st, 503, "{body}");
                assert_eq!(body["code"], "JOURNAL_FULL", "{body}");
                refused.push(n);
            }
        }
        n += 1;
    }

    // While full: not ready, with the reason; the metrics say so; reads go on.
    let body = wait_ready(&addr, 503, Duration::from_secs(10));
    assert_eq!(body["journal"]["state"], "full", "{body}");
    assert!(
        body["journal"]["reason"].as_str().unwrap().contains("full"),
        "{body}"
    );
    assert_eq!(body["components"]["journal"]["up"], false, "{body}");
    let (st, metrics) = http_text(&addr, "GET", "/metrics", "", "");
    assert_eq!(st, 200);
    for line in [
        "kinko_journal_state{state=\"full\"} 1",
        "kinko_journal_state{state=\"ok\"} 0",
        "kinko_component_up{component=\"journal\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
    let (st, o) = http(
        &addr,
        "GET",
        &format!("/api/v1/orders/client:{}", client_id(0)),
        &key,
        "",
    );
    assert_eq!(st, 200, "reads go on while the disk is full: {o}");
    // The public status tells customers that requests are not taken now.
    let (st, status) = http(&addr, "GET", "/api/v1/status", "", "");
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["accepting_requests"], false, "{status}");

    // Space comes back: without a restart the server is ready and takes orders again.
    fs::remove_file(&filler).unwrap();
    let body = wait_ready(&addr, 200, Duration::from_secs(30));
    assert_eq!(body["journal"]["state"], "ok", "{body}");
    for _ in 0..20 {
        let (st, body) = place(&addr, &key, n);
        assert_eq!(st, 200, "writes resume once space is freed: {body}");
        acked.push(n);
        n += 1;
    }
    let (_, metrics) = http_text(&addr, "GET", "/metrics", "", "");
    assert!(metrics.contains("kinko_journal_state{state=\"ok\"} 1"));
    assert!(metrics.contains("kinko_component_up{component=\"journal\"} 1"));
    let (_, status) = http(&addr, "GET", "/api/v1/status", "", "");
    assert_eq!(status["accepting_requests"], true, "{status}");
    assert!(terminate(&mut server.0).success());

    // After a restart: every acknowledged order is there, no refused one is.
    let (mut server, addr) = serve(&data, &config);
    wait_ready(&addr, 200, Duration::from_secs(30));
    for id in &acked {
        let (st, o) = http(
            &addr,
            "GET",
            &format!("/api/v1/orders/client:{}", client_id(*id)),
            &key,
            "",
        );
        assert_eq!(st, 200, "acknowledged order {id} lost: {o}");
    }
    for id in &refused {
        let (st, o) = http(
            &addr,
            "GET",
            &format!("/api/v1/orders/client:{}", client_id(*id)),
            &key,
            "",
        );
        assert_eq!(st, 404, "order {id} was answered JOURNAL_FULL but exists: {o}");
    }
    assert!(terminate(&mut server.0).success());
}
