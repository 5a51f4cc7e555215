//! The `listsinceblock` cursors of one asset, kept across restarts, and what happens when the
//! node no longer knows one.
//!
//! Three scans read the node's watch-only wallets with `listsinceblock`: deposits (the hot
//! wallet's receives) and reconciliation's spends of the hot and of the cold wallet. Each keeps
//! the block hash the node answered last as its cursor. They are stored in one small JSON file
//! per asset (`<cursor_dir>/<ASSET>.cursors.json`), written atomically (temporary file, fsync,
//! rename, fsync of the directory), so a restart of kinko continues where it stopped instead of
//! listing the whole history again.
//!
//! A cursor the node does not know (`Block not found`: a new node, a node restored without its
//! old blocks, a cursor file from another chain) is not retried: the scan starts again from the
//! block `rescan_depth` below the tip (the whole wallet history when the chain is shorter, or
//! when `rescan_depth` is 0), and the cursor moves on from there. A cursor that left the main
//! chain (a reorg) needs nothing from us: the node lists from the fork point, and reports what
//! the reorg removed. Rescanning credits nothing twice: the engine is idempotent per
//! `txid:vout`, and reconciliation recognises every spend an incident already names.
//!
//! A cursor file that does not read is reported and ignored (a scan of the whole wallet
//! history, the safe direction); one that cannot be written fails the poll, which the health
//! registry shows, and the scan goes on from memory.

use crate::error::{rpc_err, CustodyError};
use kinko_chain::rpc::{Rpc, RpcError, SinceBlock, RPC_INVALID_ADDRESS_OR_KEY};
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Which scan a cursor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// The hot wallet's receives (deposits).
    Deposits,
    /// Reconciliation: spends of the hot wallet's coins.
    HotSends,
    /// Reconciliation: spends of the cold wallet's coins.
    ColdSends,
}

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursors {
    pub deposits: Option<String>,
    pub hot_sends: Option<String>,
    pub cold_sends: Option<String>,
}

/// A block hash: 64 hex digits (anything else in the file is ignored).
fn is_block_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Cursors {
    fn slot(&mut self, s: Scan) -> &mut Option<String> {
        match s {
            Scan::Deposits => &mut self.deposits,
            Scan::HotSends => &mut self.hot_sends,
            Scan::ColdSends => &mut self.cold_sends,
        }
    }
}

/// The cursors of one asset, in memory and (with a directory) on disk.
#[derive(Debug, Default)]
pub struct CursorStore {
    path: Option<PathBuf>,
    cursors: Cursors,
    /// Changed since the last save.
    dirty: bool,
}

impl CursorStore {
    /// The store of `asset` in `dir` (`None`: memory only). A missing file is an empty store; one
    /// that does not read is logged and ignored.
    pub fn open(dir: Option<&Path>, asset: &str) -> CursorStore {
        let Some(dir) = dir else {
            return CursorStore::default();
        };
        let path = dir.join(format!("{asset}.cursors.json"));
        let cursors = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Cursors>(&bytes) {
                Ok(mut c) => {
                    for s in [Scan::Deposits, Scan::HotSends, Scan::ColdSends] {
                        let slot = c.slot(s);
                        if slot.as_deref().is_some_and(|h| !is_block_hash(h)) {
                            *slot = None;
                        }
                    }
                    c
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        "the cursor file does not read; scanning the whole wallet history again");
                    Cursors::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Cursors::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e,
                    "cannot read the cursor file; scanning the whole wallet history again");
                Cursors::default()
            }
        };
        CursorStore {
            path: Some(path),
            cursors,
            dirty: false,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn get(&self, s: Scan) -> Option<String> {
        match s {
            Scan::Deposits => self.cursors.deposits.clone(),
            Scan::HotSends => self.cursors.hot_sends.clone(),
            Scan::ColdSends => self.cursors.cold_sends.clone(),
        }
    }

    pub fn set(&mut self, s: Scan, hash: String) {
        let slot = self.cursors.slot(s);
        if slot.as_deref() != Some(hash.as_str()) {
            *slot = Some(hash);
            self.dirty = true;
        }
    }

    /// Writes the cursors if they changed: temporary file, fsync, rename, fsync of the directory.
    pub fn save(&mut self) -> Result<(), CustodyError> {
        let Some(path) = &self.path else {
            self.dirty = false;
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.cursors).expect("cursors always serialize");
        write_atomic(path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// Whether the node refused a cursor because it does not know the block.
/// Writes `bytes` to `path` durably: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CustodyError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| CustodyError::CursorIo { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create the directory"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("create the temporary file"))?;
        f.write_all(bytes).map_err(io("write the file"))?;
        f.sync_all().map_err(io("fsync the file"))?;
    }
    std::fs::rename(&tmp, path).map_err(io("rename the file"))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync the directory"))?;
    Ok(())
}

pub fn unknown_block(e: &RpcError) -> bool {
    match e {
        RpcError::Node { code, message } => {
            *code == RPC_INVALID_ADDRESS_OR_KEY || message.contains("Block not found")
        }
        _ => false,
    }
}

/// Where a rescan starts: the block `depth` below the tip, or `None` (the whole wallet
/// history) when the chain is not that long or `depth` is 0.
pub fn safe_start(rpc: &Rpc, depth: u32) -> Result<Option<String>, RpcError> {
    if depth == 0 {
        return Ok(None);
    }
    let tip = rpc.get_block_count()?;
    match tip.checked_sub(u64::from(depth)) {
        Some(h) if h > 0 => rpc.get_block_hash(h).map(Some),
        _ => Ok(None),
    }
}

/// What a scan got: the node's answer, and whether the cursor was unknown and the scan started
/// again from the safe depth.
pub struct Listed {
    pub since: SinceBlock,
    pub rescanned: bool,
}

/// `listsinceblock` from `cursor` on `rpc`; a cursor the node does not know starts a rescan
/// from [`safe_start`] instead of failing (`what` names the scan in errors and logs).
pub fn list_since(
    rpc: &Rpc,
    cursor: Option<&str>,
    target_confirmations: u32,
    rescan_depth: u32,
    what: &str,
) -> Result<Listed, CustodyError> {
    match rpc.list_since_block(cursor, target_confirmations) {
        Ok(since) => Ok(Listed {
            since,
            rescanned: false,
        }),
        Err(e) if cursor.is_some() && unknown_block(&e) => {
            let from =
                safe_start(rpc, rescan_depth).map_err(|e| rpc_err(format!("{what}: rescan start"), e))?;
            tracing::warn!(scan = what, cursor = ?cursor, rescan_from = ?from, rescan_depth,
                "the node does not know the cursor block; rescanning from the safe depth");
            let since = rpc
                .list_since_block(from.as_deref(), target_confirmations)
                .map_err(|e| rpc_err(what.to_owned(), e))?;
            Ok(Listed {
                since,
                rescanned: true,
            })
        }
        Err(e) => Err(rpc_err(what.to_owned(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00000000000000000000000000000000000000000000000000000000000000aa";
    const B: &str = "00000000000000000000000000000000000000000000000000000000000000bb";

    #[test]
    fn cursors_survive_a_restart_and_are_written_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CursorStore::open(Some(dir.path()), "LTC");
        assert_eq!(s.get(Scan::Deposits), None);
        s.set(Scan::Deposits, A.into());
        s.set(Scan::ColdSends, B.into());
        s.save().unwrap();
        let path = dir.path().join("LTC.cursors.json");
        assert!(path.is_file());
        assert!(!dir.path().join("LTC.cursors.json.tmp").exists());
        let again = CursorStore::open(Some(dir.path()), "LTC");
        assert_eq!(again.get(Scan::Deposits).as_deref(), Some(A));
        assert_eq!(again.get(Scan::HotSends), None);
        assert_eq!(again.get(Scan::ColdSends).as_deref(), Some(B));
        // Unchanged: no write (a removed file stays removed).
        std::fs::remove_file(&path).unwrap();
        let mut s = again;
        s.set(Scan::Deposits, A.into());
        s.save().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_file_that_does_not_read_means_a_whole_rescan_not_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LTC.cursors.json");
        for bad in ["{not json", r#"{"deposits":"zz"}"#, r#"{"other":1}"#] {
            std::fs::write(&path, bad).unwrap();
            let s = CursorStore::open(Some(dir.path()), "LTC");
            assert_eq!(s.get(Scan::Deposits), None, "{bad}");
        }
    }

    #[test]
    fn only_an_unknown_block_starts_a_rescan() {
        let nf = RpcError::Node {
            code: RPC_INVALID_ADDRESS_OR_KEY,
            message: "Block not found".into(),
        };
        assert!(unknown_block(&nf));
        assert!(!unknown_block(&RpcError::Transport("refused".into())));
        assert!(!unknown_block(&RpcError::Node {
            code: -18,
            message: "Requested wallet does not exist or is not loaded".into()
        }));
    }
}
