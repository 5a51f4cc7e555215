//! A real Anvil node for tests (this crate's, the signer's, custody's, the binary's): a free
//! loopback port, no automatic mining (tests mine with [`EthRpc::mine`] and reorganise with
//! [`EthRpc::reorg`]), killed on drop. Every wait is bounded.
//!
//! The binary is `$KINKO_ANVIL`, else the one `scripts/install-test-deps` installs from npm
//! (`@foundry-rs/anvil-linux-amd64`) under `target/test-deps/anvil`, else `anvil` on `PATH`.

use super::rpc::{EthRpc, EthRpcError};
use super::EthAddress;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for the node to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The chain id tests run with (Anvil's default).
pub const CHAIN_ID: u64 = 31337;
/// The test token's committed bytecode (hex), checked against its source in kinko-chain's tests.
pub const TEST_TOKEN_BIN: &str = include_str!("../../testdata/TestUsd.bin");
/// Attempts at starting (a free port can be taken before Anvil binds it).
const START_ATTEMPTS: usize = 3;
/// Where install-test-deps puts the binary, relative to the workspace root.
pub const INSTALLED: &str = "target/test-deps/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// A running Anvil.
pub struct Anvil {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Anvil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anvil")
            .field("pid", &self.child.id())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Why Anvil did not start.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    #[error("anvil not found (looked at $KINKO_ANVIL, {INSTALLED}, PATH): run scripts/install-test-deps")]
    NotFound,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("anvil exited ({status}) while starting: {stderr}")]
    Exited {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("anvil did not answer within {START_TIMEOUT:?}")]
    Timeout,
    #[error("anvil answered unexpectedly: {0}")]
    Unexpected(#[source] EthRpcError),
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> AnvilError + '_ {
    move |source| AnvilError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The Anvil binary to run.
pub fn binary() -> Result<PathBuf, AnvilError> {
    if let Some(p) = std::env::var_os("KINKO_ANVIL") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(AnvilError::NotFound)
        };
    }
    // crates/chain → the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let installed = root.join(INSTALLED);
    if installed.is_file() {
        return Ok(installed);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("anvil"))
        .find(|p| p.is_file())
        .ok_or(AnvilError::NotFound)
}

impl Anvil {
    /// Starts Anvil (chain id [`CHAIN_ID`], no automine, ten funded dev accounts) and waits at
    /// most [`START_TIMEOUT`] for it to answer.
    pub fn start() -> Result<Anvil, AnvilError> {
        let bin = binary()?;
        let mut attempt = 1;
        loop {
            match Self::try_start(&bin) {
                Ok(a) => return Ok(a),
                Err((_, true)) if attempt < START_ATTEMPTS => attempt += 1,
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn try_start(bin: &Path) -> Result<Anvil, (AnvilError, bool)> {
        let fatal = |e: AnvilError| (e, false);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(io_err("cannot find a free loopback port"))
            .map_err(fatal)?;
        let dir = tempfile::Builder::new()
            .prefix("kinko-anvil-")
            .tempdir()
            .map_err(io_err("cannot create a directory"))
            .map_err(fatal)?;
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(io_err("cannot create a log"))
            .map_err(fatal)?;
        let child = Command::new(bin)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--chain-id")
            .arg(CHAIN_ID.to_string())
            .arg("--no-mining")
            .arg("--quiet")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io_err("cannot start anvil"))
            .map_err(fatal)?;
        let mut anvil = Anvil {
            child,
            port,
            _dir: dir,
        };
        let probe = EthRpc::with_timeout(&anvil.url(), Duration::from_secs(2));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match probe.chain_id() {
                Ok(CHAIN_ID) => return Ok(anvil),
                Ok(other) => {
                    return Err(fatal(AnvilError::Unexpected(EthRpcError::Decode(format!(
                        "chain id {other}"
                    )))))
                }
                Err(EthRpcError::Transport(_)) => {}
                Err(e) => return Err(fatal(AnvilError::Unexpected(e))),
            }
            if let Ok(Some(status)) = anvil.child.try_wait() {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let retry = stderr.contains("in use") || stderr.contains("bind");
                return Err((
                    AnvilError::Exited {
                        status,
                        stderr: stderr.trim().to_owned(),
                    },
                    retry,
                ));
            }
            if Instant::now() > deadline {
                return Err(fatal(AnvilError::Timeout));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn rpc(&self) -> EthRpc {
        EthRpc::new(&self.url())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first of Anvil's funded dev accounts (a test faucet).
    pub fn faucet(&self) -> Result<EthAddress, EthRpcError> {
        self.rpc()
            .accounts()?
            .first()
            .copied()
            .ok_or_else(|| EthRpcError::Decode("anvil has no dev accounts".into()))
    }

    /// Mines blocks until `hash` has a receipt, at most `blocks_max` blocks; the receipt.
    pub fn mine_until_mined(
        &self,
        hash: &[u8; 32],
        blocks_max: u64,
    ) -> Result<super::rpc::Receipt, EthRpcError> {
        let rpc = self.rpc();
        for _ in 0..blocks_max {
            rpc.mine(1)?;
            if let Some(r) = rpc.receipt(hash)? {
                return Ok(r);
            }
        }
        Err(EthRpcError::Decode(format!(
            "transaction {} not mined within {blocks_max} blocks",
            hex::encode(hash)
        )))
    }

    /// Deploys the test token (`testdata/TestUsd.sol`, 6 decimals, its whole supply with the
    /// faucet) from the faucet; its contract address.
    pub fn deploy_test_token(&self) -> Result<EthAddress, EthRpcError> {
        let code = hex::decode(TEST_TOKEN_BIN.trim())
            .map_err(|e| EthRpcError::Decode(format!("TestUsd.bin: {e}")))?;
        let hash = self.rpc().send_from_dev(&self.faucet()?, None, 0, &code)?;
        self.mine_until_mined(&hash, 2)?
            .contract_address
            .ok_or_else(|| EthRpcError::Decode("the token's deployment created no contract".into()))
    }

    /// Deploys the cold multisig (`testdata/ColdMultisig.sol`) for `owners` and `threshold`
    /// from the faucet; its contract address.
    pub fn deploy_cold_multisig(
        &self,
        owners: &[EthAddress],
        threshold: u64,
    ) -> Result<EthAddress, EthRpcError> {
        let code =
            super::cold::deploy_code(owners, threshold).map_err(|e| EthRpcError::Decode(e.to_string()))?;
        let hash = self.rpc().send_from_dev(&self.faucet()?, None, 0, &code)?;
        let receipt = self.mine_until_mined(&hash, 2)?;
        if receipt.status != 1 {
            return Err(EthRpcError::Decode(
                "the cold multisig's deployment reverted".into(),
            ));
        }
        receipt
            .contract_address
            .ok_or_else(|| EthRpcError::Decode("the cold multisig's deployment created no contract".into()))
    }

    /// Stops the node now (also done on drop).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
