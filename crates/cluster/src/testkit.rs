//! A three-node `nats-server` cluster with JetStream on loopback, for tests: free ports, its own
//! store directories under a temporary directory, bounded waits, every node killed on drop.
//! Needs Debian's `nats-server` (scripts/install-test-deps).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to accept connections.
const START_WAIT: Duration = Duration::from_secs(20);

/// Why the cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("nats-server not found (scripts/install-test-deps installs it)")]
    NotInstalled,
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("nats-server node {node} did not accept connections within {wait:?}; its log:\n{log}")]
    NotReady {
        node: usize,
        wait: Duration,
        log: String,
    },
}

struct NodeSpec {
    client: u16,
    route: u16,
    dir: PathBuf,
}

/// The running cluster.
pub struct NatsCluster {
    bin: PathBuf,
    _tmp: tempfile::TempDir,
    nodes: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
}

/// The `nats-server` binary, if installed.
pub fn nats_server() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("/usr/sbin/nats-server"),
        PathBuf::from("/usr/bin/nats-server"),
    ];
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Some(p.clone());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    })
}

fn free_port() -> Result<u16, TestkitError> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| TestkitError::Io("cannot bind a loopback port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| TestkitError::Io("cannot read a bound port", e))
}

impl NatsCluster {
    /// Starts `n` nodes (3 for a quorum that survives one loss) and waits until each accepts
    /// connections. JetStream's own leaders are elected afterwards; clients retry their setup.
    pub fn start(n: usize) -> Result<NatsCluster, TestkitError> {
        let bin = nats_server().ok_or(TestkitError::NotInstalled)?;
        let tmp =
            tempfile::tempdir().map_err(|e| TestkitError::Io("cannot make a temporary directory", e))?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let dir = tmp.path().join(format!("n{i}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| TestkitError::Io("cannot make a store directory", e))?;
            nodes.push(NodeSpec {
                client: free_port()?,
                route: free_port()?,
                dir,
            });
        }
        for i in 0..n {
            let routes: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, s)| format!("\"nats-route://127.0.0.1:{}\"", s.route))
                .collect();
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\ncluster {{\n  name: kinko-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                nodes[i].client,
                nodes[i].dir.join("js").display(),
                nodes[i].route,
                routes.join(", ")
            );
            std::fs::write(nodes[i].dir.join("nats.conf"), conf)
                .map_err(|e| TestkitError::Io("cannot write a node's configuration", e))?;
        }
        let mut cluster = NatsCluster {
            bin,
            _tmp: tmp,
            children: (0..n).map(|_| None).collect(),
            nodes,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_ready(i)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), TestkitError> {
        let spec = &self.nodes[i];
        let log = std::fs::File::create(spec.dir.join("log"))
            .map_err(|e| TestkitError::Io("cannot create a node log", e))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(spec.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| TestkitError::Io("cannot start nats-server", e))?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn wait_ready(&self, i: usize) -> Result<(), TestkitError> {
        let started = Instant::now();
        while started.elapsed() < START_WAIT {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.nodes[i].client)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestkitError::NotReady {
            node: i,
            wait: START_WAIT,
            log: self.log(i),
        })
    }

    /// Client URLs of every node (running or not).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.client))
            .collect()
    }

    /// Kills node `i` (SIGKILL); its store stays for [`NatsCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it accepts connections.
    pub fn restart(&mut self, i: usize) -> Result<(), TestkitError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready(i)
    }

    /// Node `i`'s log (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("log")).unwrap_or_default()
    }

    /// Node `i`'s directory.
    pub fn dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}
