//! A real `litecoind -regtest` for tests (this crate's, other crates', the kinko binary's):
//! its own temporary datadir, free loopback ports, a random RPC password, killed on drop.
//!
//! The node's "miner" wallet holds keys: it is a test convenience to fund addresses and mine.
//! kinko's own wallets on a node are watch-only.

use crate::rpc::{Rpc, RpcError};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where Debian's `litecoind` package puts the daemon.
pub const LITECOIND_DEFAULT: &str = "/usr/lib/litecoin/litecoind";

/// How long `start` waits for the node to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting (a port picked free can be taken by someone else before the node binds).
const START_ATTEMPTS: usize = 3;

/// Name of the key-holding test wallet.
pub const MINER_WALLET: &str = "miner";

pub struct RegtestNode {
    child: Child,
    binary: PathBuf,
    dir: tempfile::TempDir,
    rpc_port: u16,
    user: String,
    password: String,
    miner_address: Mutex<Option<String>>,
}

impl std::fmt::Debug for RegtestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegtestNode")
            .field("pid", &self.child.id())
            .field("datadir", &self.dir.path())
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum RegtestError {
    #[error(
        "litecoind not found at {}: run scripts/install-test-deps (Debian package litecoind) \
         or set KINKO_LITECOIND",
        .0.display()
    )]
    NotFound(PathBuf),
    /// A file, port or process could not be had (`what` says which).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness: {0}")]
    Random(getrandom::Error),
    #[error("litecoind answered unexpectedly while starting: {0}")]
    Unexpected(#[source] RpcError),
    #[error("litecoind exited ({status}) while starting: {stderr}\n{debug_log}")]
    Exited {
        status: std::process::ExitStatus,
        stderr: String,
        debug_log: String,
    },
    #[error("litecoind did not answer RPC within {START_TIMEOUT:?}; debug.log ends:\n{debug_log}")]
    Timeout { debug_log: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegtestError {
    let what = what.into();
    move |source| RegtestError::Io { what, source }
}

fn free_port() -> Result<u16, RegtestError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("cannot bind a loopback port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err("cannot read the bound port"))
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl RegtestNode {
    /// Starts a node and waits (at most [`START_TIMEOUT`]) until it answers RPC. The binary is
    /// `$KINKO_LITECOIND` or [`LITECOIND_DEFAULT`].
    pub fn start() -> Result<RegtestNode, RegtestError> {
        let binary = std::env::var_os("KINKO_LITECOIND")
            .map_or_else(|| PathBuf::from(LITECOIND_DEFAULT), PathBuf::from);
        Self::start_with(&binary)
    }

    /// [`RegtestNode::start`] with the given `litecoind` binary.
    pub fn start_with(binary: &Path) -> Result<RegtestNode, RegtestError> {
        if !binary.is_file() {
            return Err(RegtestError::NotFound(binary.to_owned()));
        }
        let mut attempt = 1;
        loop {
            match Self::try_start(binary) {
                Ok(node) => return Ok(node),
                Err((_, true)) if attempt < START_ATTEMPTS => attempt += 1,
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One start; the error says whether another attempt (new ports) may help.
    fn try_start(binary: &Path) -> Result<RegtestNode, (RegtestError, bool)> {
        let fatal = |e: RegtestError| (e, false);
        let rpc_port = free_port().map_err(fatal)?;
        let mut secret = [0u8; 24];
        getrandom::fill(&mut secret).map_err(|e| fatal(RegtestError::Random(e)))?;
        Self::try_start_on(binary, rpc_port, "kinko-test".into(), hex::encode(secret))
    }

    /// Kills this node and starts a fresh one in its place: a new, empty datadir (none of the
    /// old blocks or wallets), the same RPC port and credentials, so clients configured for
    /// the old node reach the new one (a node restored from nothing, for fault tests).
    pub fn replace_with_fresh(&mut self) -> Result<(), RegtestError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The old node's port may take a moment to be free again.
            match Self::try_start_on(
                &self.binary,
                self.rpc_port,
                self.user.clone(),
                self.password.clone(),
            ) {
                Ok(node) => {
                    *self = node;
                    return Ok(());
                }
                Err((_, true)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// The node's process id (fault tests stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn try_start_on(
        binary: &Path,
        rpc_port: u16,
        user: String,
        password: String,
    ) -> Result<RegtestNode, (RegtestError, bool)> {
        let fatal = |e: RegtestError| (e, false);
        let dir = tempfile::Builder::new()
            .prefix("kinko-litecoind-")
            .tempdir()
            .map_err(io_err("cannot create a datadir"))
            .map_err(fatal)?;
        let p2p_port = free_port().map_err(fatal)?;
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(io_err("cannot create a log"))
            .map_err(fatal)?;
        let child = Command::new(binary)
            .arg("-regtest")
            .arg(format!("-datadir={}", dir.path().display()))
            .arg("-server=1")
            .arg("-rpcbind=127.0.0.1")
            .arg("-rpcallowip=127.0.0.1")
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={p2p_port}"))
            .arg("-listen=0")
            .arg(format!("-rpcuser={user}"))
            .arg(format!("-rpcpassword={password}"))
            .arg("-fallbackfee=0.0001")
            .arg("-txindex=1")
            // MWEB activating at height 432 breaks block parsing: keep it off.
            .arg("-vbparams=mweb:-2:0")
            .arg("-printtoconsole=0")
            .arg("-daemon=0")
            // Key-holding wallets (the test miner) would otherwise derive 2 000 keys (~1 s).
            .arg("-keypool=10")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io_err(format!("cannot start {}", binary.display())))
            .map_err(fatal)?;
        let mut node = RegtestNode {
            child,
            binary: binary.to_owned(),
            dir,
            rpc_port,
            user,
            password,
            miner_address: Mutex::new(None),
        };
        let probe = node.rpc().with_timeout(Duration::from_secs(2));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match probe.get_blockchain_info() {
                Ok(_) => return Ok(node),
                Err(RpcError::Transport(_)) | Err(RpcError::Node { code: -28, .. }) => {}
                Err(e) => return Err(fatal(RegtestError::Unexpected(e))),
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let debug = log_tail(&node.dir.path().join("regtest").join("debug.log"), 15);
                let bind_failed = stderr.contains("bind") || debug.contains("Unable to bind");
                return Err((
                    RegtestError::Exited {
                        status,
                        stderr: stderr.trim().to_owned(),
                        debug_log: debug,
                    },
                    bind_failed,
                ));
            }
            if Instant::now() > deadline {
                return Err(fatal(RegtestError::Timeout {
                    debug_log: log_tail(&node.dir.path().join("regtest").join("debug.log"), 15),
                }));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The node-level RPC client.
    pub fn rpc(&self) -> Rpc {
        Rpc::new(&self.url(), &self.user, &self.password)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The node's datadir (the debug log is at `regtest/debug.log`).
    pub fn datadir(&self) -> &Path {
        self.dir.path()
    }

    /// The key-holding "miner" wallet, created on first use and funded by mining 101 blocks
    /// to it (one mature 50-coin coinbase).
    ///
    /// # Panics
    /// If the node refuses (a broken test setup); see [`RegtestNode::try_miner`].
    pub fn miner(&self) -> Rpc {
        self.try_miner()
            .unwrap_or_else(|e| panic!("regtest miner wallet: {e}"))
    }

    /// [`RegtestNode::miner`] returning the error instead of panicking.
    pub fn try_miner(&self) -> Result<Rpc, RpcError> {
        self.miner_address().map(|_| self.rpc().wallet(MINER_WALLET))
    }

    fn miner_address(&self) -> Result<String, RpcError> {
        let mut guard = self.miner_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = guard.as_ref() {
            return Ok(a.clone());
        }
        let rpc = self.rpc();
        rpc.call::<serde_json::Value>("createwallet", serde_json::json!([MINER_WALLET]))?;
        let address = rpc.wallet(MINER_WALLET).get_new_address("miner")?;
        rpc.generate_to_address(101, &address)?;
        *guard = Some(address.clone());
        Ok(address)
    }

    /// Mines `n` blocks to the miner's address; returns their hashes.
    ///
    /// # Panics
    /// If the node refuses; see [`RegtestNode::try_mine`].
    pub fn mine(&self, n: u32) -> Vec<String> {
        self.try_mine(n)
            .unwrap_or_else(|e| panic!("regtest mine {n}: {e}"))
    }

    pub fn try_mine(&self, n: u32) -> Result<Vec<String>, RpcError> {
        let address = self.miner_address()?;
        self.rpc().generate_to_address(n, &address)
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        // SIGKILL: the datadir is thrown away anyway.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
