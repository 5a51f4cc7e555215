//! A replicated cluster of real `kinko serve` processes on a real three-node `nats-server`
//! cluster (docs/design/replication.md): a primary and two `--standby` nodes, a client writing
//! continuously (registrations: each one a journaled command with a unique email), the primary
//! killed with SIGKILL; a standby takes over, and afterwards every acknowledged registration is
//! in the new primary's journal exactly once and the surviving nodes have the same state.

use super::{http, BIN, TEST_MASTER_KEY};
use kinko_cluster::testkit::NatsCluster;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "a long enough password";

pub(super) struct Node {
    pub(super) child: Child,
    pub(super) data: PathBuf,
    pub(super) addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, name: &str, urls: &[String], standby: bool) -> Node {
    start_with(dir, name, urls, standby, "", "")
}

/// [`start`] with `api` appended to the `[api]` section and `sections` (whole TOML sections)
/// after `[cluster]`.
pub(super) fn start_with(
    dir: &Path,
    name: &str,
    urls: &[String],
    standby: bool,
    api: &str,
    sections: &str,
) -> Node {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join(format!("{name}.toml"));
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[api]\nrate_per_ip_burst = 1000000\nrate_per_ip_per_s = 1000000\n\
             rate_public_per_ip_burst = 1000000\nrate_public_per_ip_per_s = 1000000\n{api}\
             [cluster]\nservers = [{}]\nnode = \"{name}\"\nadvertise = \"http://{addr}\"\n\
             lease_ttl_ms = 1500\npublish_timeout_ms = 500\n{sections}",
            servers.join(", ")
        ),
    )
    .unwrap();
    let data = dir.join(name);
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "serve",
    ];
    if standby {
        args.push("--standby");
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("KINKO_CONFIG")
        .env("KINKO_LOG", "info")
        .env("KINKO_MASTER_KEY", TEST_MASTER_KEY)
        .env("KINKO_LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kinko");
    // Its log is drained on a thread once it serves; a node that dies first shows its log.
    super::serving_addr(&mut child);
    Node { child, data, addr }
}

fn register(addr: &str, email: &str) -> (u16, serde_json::Value) {
    let body = format!(r#"{{"email":"{email}","password":"{PASSWORD}"}}"#);
    match std::panic::catch_unwind(|| http(addr, "POST", "/api/v1/auth/register", "", &body)) {
        Ok(r) => r,
        // The node is gone (connection refused or reset).
        Err(_) => (0, serde_json::Value::Null),
    }
}

/// Registers `{prefix}{i}@example.com` for each `i` somewhere in `nodes`, each acknowledged
/// (201) within `limit`, and records it in `acknowledged`.
fn register_each(
    nodes: &[&str],
    prefix: &str,
    range: std::ops::Range<u32>,
    limit: Duration,
    acknowledged: &mut Vec<String>,
) {
    for i in range {
        let email = format!("{prefix}{i}@example.com");
        assert_eq!(register_anywhere(nodes, &email, limit), 201, "{email}");
        acknowledged.push(email);
    }
}

/// Registers `email` somewhere in `nodes` (bounded): the status that settled it.
fn register_anywhere(nodes: &[&str], email: &str, limit: Duration) -> u16 {
    let deadline = Instant::now() + limit;
    loop {
        for addr in nodes {
            let (st, body) = register(addr, email);
            match st {
                201 => return 201,
                // Taken: an earlier attempt whose answer was lost did get through.
                409 => return 409,
                503 => assert!(
                    matches!(body["code"].as_str(), Some("NOT_LEADER" | "OUTCOME_UNKNOWN")),
                    "{body}"
                ),
                0 => {}
                other => panic!("registration of {email} at {addr}: {other} {body}"),
            }
        }
        assert!(Instant::now() < deadline, "no node took {email} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How often each email's registration is in the journal of `data`.
fn registrations(data: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for rec in kinko_journal::read_from(&data.join("journal"), 1).unwrap() {
        let rec = rec.unwrap();
        let cmd = kinko_engine::decode_command(rec.kind, &rec.payload).unwrap();
        if let kinko_core::Command::Identity(kinko_core::identity::IdentityCommand::Register {
            email, ..
        }) = cmd
        {
            *out.entry(email).or_insert(0) += 1;
        }
    }
    out
}

#[test]
fn the_primary_killed_under_load_a_standby_takes_over_with_every_acknowledged_command_once() {
    let nats = NatsCluster::start(3).expect("a three-node nats-server cluster");
    let urls = nats.urls();
    let tmp = tempfile::tempdir().unwrap();
    let mut a = start(tmp.path(), "a", &urls, false);
    assert_eq!(
        register_anywhere(&[&a.addr], "first@example.com", Duration::from_secs(30)),
        201
    );
    let b = start(tmp.path(), "b", &urls, true);
    let c = start(tmp.path(), "c", &urls, true);

    // A standby refuses writes and names the leader.
    let (st, body) = register(&b.addr, "refused@example.com");
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["code"], "NOT_LEADER", "{body}");
    assert_eq!(body["leader"], format!("http://{}", a.addr), "{body}");

    // Load, then SIGKILL of the primary in the middle of it.
    let mut acknowledged = Vec::new();
    register_each(
        &[&a.addr],
        "before",
        0..20,
        Duration::from_secs(10),
        &mut acknowledged,
    );
    a.child.kill().unwrap();
    let killed = Instant::now();
    let survivors = [b.addr.as_str(), c.addr.as_str()];
    let first = register_anywhere(&survivors, "after0@example.com", Duration::from_secs(30));
    let failover = killed.elapsed();
    eprintln!("failover: first acknowledged write {failover:?} after the primary's SIGKILL");
    assert_eq!(first, 201);
    acknowledged.push("after0@example.com".into());
    register_each(
        &survivors,
        "after",
        1..20,
        Duration::from_secs(10),
        &mut acknowledged,
    );
    // Let the other standby apply the last batch, then stop both.
    std::thread::sleep(Duration::from_millis(1_000));
    // Each survivor exports its role, lag, leader changes and publish latency: one of them is
    // now the primary, and both saw the new epoch.
    let mut roles = Vec::new();
    for addr in survivors {
        let (st, m) = super::http_text(addr, "GET", "/metrics", "", "");
        assert_eq!(st, 200, "{m}");
        for name in [
            "kinko_replication_lag ",
            "kinko_replication_leader_changes_total ",
            "kinko_replication_epoch ",
            "kinko_replication_publish_seconds_bucket{",
            "kinko_replication_publish_seconds_count ",
        ] {
            assert!(m.contains(name), "{addr} exports no {name}:\n{m}");
        }
        let value = |prefix: &str| -> f64 {
            m.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{prefix} in\n{m}"))
        };
        assert!(value("kinko_replication_leader_changes_total ") >= 1.0, "{m}");
        assert!(value("kinko_replication_epoch ") >= 0.0, "{m}");
        roles.push(
            ["primary", "standby", "deposed"]
                .into_iter()
                .find(|r| value(&format!("kinko_replication_role{{role=\"{r}\"}} ")) == 1.0)
                .unwrap_or_else(|| panic!("no role is 1 in\n{m}")),
        );
    }
    roles.sort();
    assert_eq!(roles, ["primary", "standby"], "after the failover");
    let (b_data, c_data) = (b.data.clone(), c.data.clone());
    for mut n in [b, c] {
        super::terminate(&mut n.child);
    }
    let rb = registrations(&b_data);
    let rc = registrations(&c_data);
    assert_eq!(rb, rc, "both survivors hold the same registrations");
    for email in &acknowledged {
        assert_eq!(rb.get(email), Some(&1), "{email} exactly once");
    }
    assert!(!rb.contains_key("refused@example.com"));
    let cfg_b = kinko_engine::EngineConfig::new(&b_data);
    let cfg_c = kinko_engine::EngineConfig::new(&c_data);
    let (_, _, report_b) = kinko_engine::recover(&cfg_b).unwrap();
    let (_, _, report_c) = kinko_engine::recover(&cfg_c).unwrap();
    assert_eq!(report_b.head_seq, report_c.head_seq);
    assert_eq!(report_b.state_hash, report_c.state_hash);
    drop(a);
}

#[test]
fn the_primary_frozen_with_sigstop_wakes_deposed_and_writes_nothing() {
    let nats = NatsCluster::start(3).expect("a three-node nats-server cluster");
    let urls = nats.urls();
    let tmp = tempfile::tempdir().unwrap();
    let mut a = start(tmp.path(), "a", &urls, false);
    assert_eq!(
        register_anywhere(&[&a.addr], "first@example.com", Duration::from_secs(30)),
        201
    );
    let b = start(tmp.path(), "b", &urls, true);
    let mut acknowledged = vec!["first@example.com".to_owned()];
    register_each(
        &[&a.addr],
        "before",
        0..10,
        Duration::from_secs(10),
        &mut acknowledged,
    );
    // A partition: the primary stops answering anyone, its lease expires, the standby takes
    // over and writes.
    let pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    register_each(
        &[&b.addr],
        "after",
        0..10,
        Duration::from_secs(30),
        &mut acknowledged,
    );
    // It wakes up deposed: its next write is refused as not applied, and so is every later one.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    for i in 0..3 {
        let (st, body) = register(&a.addr, &format!("woken{i}@example.com"));
        assert_eq!(st, 503, "{body}");
        assert_eq!(body["code"], "NOT_LEADER", "{body}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let b_data = b.data.clone();
    let mut b = b;
    super::terminate(&mut b.child);
    let rb = registrations(&b_data);
    for email in &acknowledged {
        assert_eq!(rb.get(email), Some(&1), "{email} exactly once");
    }
    assert!(rb.keys().all(|e| !e.starts_with("woken")), "{rb:?}");
    // Whatever the woken primary has in its own journal beyond the new primary's is nothing
    // anyone was told had happened.
    let _ = a.child.kill();
    let _ = a.child.wait();
    let ra = registrations(&a.data);
    for email in ra.keys() {
        assert!(
            rb.contains_key(email) || email.starts_with("woken"),
            "{email} only on the old primary"
        );
    }
}
