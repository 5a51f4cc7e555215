//! Unsigned withdrawal transactions kept between asking the signer and recording its answer.
//!
//! The signer signs a withdrawal for one transaction only (`ALREADY_SIGNED` otherwise, which
//! halts all signing). If kinko dies after the signer answered and before the signed
//! transaction was journaled, the retry must ask for exactly the same transaction, not one
//! rebuilt from a wallet that has changed meanwhile (a larger coin arrived): so the PSBT is
//! written here, durably, before the signer is asked, and used again while its inputs are
//! still unspent. It holds no secret (an unsigned PSBT); the signer checks it as always.

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

    /// Forgets `withdrawal`'s PSBT once its signed transaction is journaled.
    pub fn remove(&self, withdrawal: u64) {
        if let Some(path) = self.path(withdrawal) {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a pending PSBT");
                }
            }
        }
    }
}
