//! Unsigned withdrawal transactions kept between asking the signer and recording its answer.
//!
//! The signer signs a withdrawal for one transaction only (`ALREADY_SIGNED` otherwise, which
//! halts all signing). If kinko dies after the signer answered and before the signed
//! transaction was journaled, the retry must ask for exactly the same transaction, not one
//! rebuilt from a wallet that has changed meanwhile (a larger coin arrived): so the PSBT is
//! written here, durably, before the signer is asked, and used again while its inputs are
//! still unspent. It holds no secret (an unsigned PSBT); the signer checks it as always.
//!
//! Ethereum keeps the unsigned EIP-1559 transaction the same way (`*.eth-tx`, hex): a rebuilt
//! one would carry the fees of the new base fee, and the signer takes another transaction at a
//! nonce it signed only with both fees higher (`REPLACEMENT_INVALID`, which halts it).

use crate::error::CustodyError;
use bitcoin::Psbt;
use kinko_chain::psbt;
use std::path::{Path, PathBuf};

/// The pending PSBTs of one asset (`None`: memory only, for tests of the service alone).
#[derive(Debug, Default)]
pub struct PendingPsbts {
    dir: Option<PathBuf>,
    asset: String,
}

impl PendingPsbts {
    pub fn open(dir: Option<&Path>, asset: &str) -> PendingPsbts {
        PendingPsbts {
            dir: dir.map(Path::to_path_buf),
            asset: asset.to_owned(),
        }
    }

    fn path(&self, withdrawal: u64) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.withdrawal-{withdrawal}.psbt", self.asset)))
    }

    /// The PSBT kept for `withdrawal`, if any and readable.
    pub fn load(&self, withdrawal: u64) -> Option<Psbt> {
        let path = self.path(withdrawal)?;
        let text = std::fs::read_to_string(&path).ok()?;
        match psbt::from_base64(text.trim()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "a pending PSBT does not read; building anew");
                None
            }
        }
    }

    /// Keeps `p` for `withdrawal`, durably, before the signer is asked.
    pub fn save(&self, withdrawal: u64, p: &Psbt) -> Result<(), CustodyError> {
        let Some(path) = self.path(withdrawal) else {
            return Ok(());
        };
        crate::cursor::write_atomic(&path, psbt::to_base64(p).as_bytes())
    }

    fn eth_path(&self, withdrawal: u64) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.withdrawal-{withdrawal}.eth-tx", self.asset)))
    }

    /// The unsigned Ethereum transaction kept for `withdrawal`, if any and readable.
    pub fn load_eth(&self, withdrawal: u64) -> Option<Vec<u8>> {
        let path = self.eth_path(withdrawal)?;
        let text = std::fs::read_to_string(&path).ok()?;
        let raw = hex::decode(text.trim()).ok();
        if raw.is_none() {
            tracing::error!(path = %path.display(), "a pending Ethereum transaction does not read; building anew");
        }
        raw
    }

    /// Keeps the unsigned Ethereum transaction `raw` for `withdrawal`, durably, before the
    /// signer is asked.
    pub fn save_eth(&self, withdrawal: u64, raw: &[u8]) -> Result<(), CustodyError> {
        let Some(path) = self.eth_path(withdrawal) else {
            return Ok(());
        };
        crate::cursor::write_atomic(&path, hex::encode(raw).as_bytes())
    }

    /// Forgets `withdrawal`'s unsigned Ethereum transaction (recorded signed, or failed).
    pub fn remove_eth(&self, withdrawal: u64) {
        if let Some(path) = self.eth_path(withdrawal) {
            Self::remove_file(&path);
        }
    }

    fn remove_file(path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a pending transaction");
            }
        }
    }

    /// Forgets `withdrawal`'s PSBT once its signed transaction is journaled.
    pub fn remove(&self, withdrawal: u64) {
        if let Some(path) = self.path(withdrawal) {
            Self::remove_file(&path);
        }
    }
}
